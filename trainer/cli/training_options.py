"""The training knobs ``landmark-train`` and the protocol share: one group, one set of defaults.

The defaults are the settings chosen on the source-held-out protocol
(``docs/results/protocol.md``): ``landmark-train --data DIR --output DIR`` is the deployment fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from configuration import CommandSettings, setting
from trainer.cli.settings import CountOrNone, TextOrNone

if TYPE_CHECKING:
    from trainer.training.run import TrainingSettings

#: First trainable stage measured best per backbone (docs/results); others use the backbone's own.
MEASURED_TRAINABLE_FROM = {"mobilenet_v2": "block_15"}


class TrainingOptions(CommandSettings):
    """The network, how it is fine-tuned, whitened and calibrated."""

    group_title: ClassVar[str] = "training"

    backbone: str = setting("mobilenet_v2", help="backbone name")
    weights: TextOrNone = setting("imagenet", help="imagenet or none")
    input_size: int = setting(
        288,
        ge=32,
        help="side of the square input (224: 1.65x faster, see docs/results/protocol.md)",
    )
    trainable_from: TextOrNone = setting(
        "auto",
        help="first trainable stage (none: all frozen; auto: block_15 for mobilenet_v2, "
        "else the backbone's default)",
    )
    embedding_dim: CountOrNone = setting(0, help="Dense projection size (0: none)")
    pooling: Literal["average", "gem"] = setting(
        "average",
        help="average, or gem (generalised mean with a learned p; a custom layer the worker "
        "cannot load: for measuring with the protocol)",
    )
    mining: Literal["random", "batch_hard", "batch_semi_hard"] = setting(
        "random",
        help="triplet mining with --loss triplet: random (the paper's; best here), batch_hard or "
        "batch_semi_hard",
    )
    margin: float = setting(0.1, gt=0.0, help="triplet margin alpha")
    loss: Literal["triplet", "subcenter_arcface"] = setting(
        "subcenter_arcface",
        help="subcenter_arcface (a training-only classification head; best here) or triplet "
        "(the paper's, with --mining)",
    )
    distillation: float = setting(
        2.0,
        ge=0.0,
        help="weight of the penalty keeping embeddings near the pretrained network's (0: none)",
    )
    arcface_scale: float = setting(30.0, gt=0.0, help="ArcFace logit scale s")
    arcface_margin: float = setting(0.3, ge=0.0, lt=1.5, help="ArcFace angular margin (radians)")
    subcenters: int = setting(3, ge=1, help="ArcFace centres a landmark")
    p: int = setting(8, ge=2, help="landmarks per batch")
    k: int = setting(4, ge=2, help="photos per landmark in a batch")
    epochs: int = setting(12, ge=1, help="most epochs")
    lr: float = setting(1e-4, gt=0.0, help="Adam learning rate")
    patience: int = setting(3, ge=1, help="early stopping patience (epochs)")
    augment_views: int = setting(2, ge=0, help="augmented views cached per training photo")
    workers: int = setting(2, ge=1, help="photo decoding threads")
    batch_size: int = setting(
        32, ge=1, env="LANDMARK_CACHE_BATCH", help="photos per forward pass when caching"
    )
    whitening: bool = setting(
        True,
        help="learned whitening after the network, fitted on the fine-tuned training "
        "embeddings (exported with the model)",
    )
    whitening_dim: CountOrNone = setting(0, help="whitened dimension (0: the embedding's)")
    whitening_shrinkage: float = setting(
        1.0, ge=0, help="whitening ridge, as a share of the intra-landmark scatter's mean"
    )
    target_precision: float = setting(
        0.9,
        gt=0,
        le=1,
        help="precision the 'no landmark' threshold is calibrated for",
    )
    calibration_confidence: float = setting(
        0.9,
        ge=0,
        lt=1,
        help="confidence with which the calibration photos' precision must reach the target "
        "(a lower Wilson bound; 0: their precision itself)",
    )

    def resolved_trainable_from(self) -> str | None:
        """The first trainable stage, ``auto`` resolved for the backbone."""
        if self.trainable_from != "auto":
            return self.trainable_from
        from trainer.backbones import BACKBONES

        if self.backbone in MEASURED_TRAINABLE_FROM:
            return MEASURED_TRAINABLE_FROM[self.backbone]
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {sorted(BACKBONES)}")
        return BACKBONES[self.backbone].default_trainable_from

    def training_settings(
        self, *, output_dir: Path, cache_dir: Path, seed: int, resume: bool
    ) -> TrainingSettings:
        """The fine-tuning run these options describe."""
        from trainer.model.embedding import EmbeddingModelConfig
        from trainer.training.activation_cache import ActivationCacheSettings
        from trainer.training.objective import ObjectiveSettings
        from trainer.training.run import TrainingSettings, WhiteningSettings

        return TrainingSettings(
            model=EmbeddingModelConfig(
                self.backbone,
                self.input_size,
                self.embedding_dim,
                self.resolved_trainable_from(),
                seed=seed,
                pooling=self.pooling,
            ),
            output_dir=output_dir,
            weights=self.weights,
            mining=self.mining,
            margin=self.margin,
            p=self.p,
            k=self.k,
            epochs=self.epochs,
            learning_rate=self.lr,
            patience=self.patience,
            seed=seed,
            resume=resume,
            whitening=WhiteningSettings(self.whitening_dim, self.whitening_shrinkage)
            if self.whitening
            else None,
            target_precision=self.target_precision,
            calibration_confidence=self.calibration_confidence,
            objective=ObjectiveSettings(
                self.loss,
                self.distillation,
                self.arcface_scale,
                self.arcface_margin,
                self.subcenters,
            ),
            cache=ActivationCacheSettings(
                cache_dir=cache_dir / "activations",
                augmented_views=self.augment_views,
                augmentation_seed=seed,
                batch_size=self.batch_size,
                workers=self.workers,
            ),
        )
