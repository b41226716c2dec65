"""A fine-tuning run's settings, its summary (which goes into the export's manifest), its result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schemas.vote import VoteSettings
from trainer.evaluation.calibration import DEFAULT_TARGET_PRECISION
from trainer.metric_learning.losses import DEFAULT_MARGIN
from trainer.model.embedding import EmbeddingModelConfig, EmbeddingParts
from trainer.model.whitening import Whitening, fit_learned_whitening
from trainer.training.activation_cache import ActivationCacheSettings
from trainer.training.objective import ObjectiveSettings


@dataclass(frozen=True)
class WhiteningSettings:
    """The learned whitening (:mod:`trainer.model.whitening`) of a run.

    Attributes:
        dim: output dimension (None: the embedding's).
        shrinkage: ridge on the intra-landmark covariance, as a share of its mean eigenvalue.
    """

    dim: int | None = None
    shrinkage: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fit(self, embeddings: np.ndarray, landmark_ids: Sequence[str]) -> Whitening:
        """The whitening these settings describe, fitted on labelled training embeddings."""
        return fit_learned_whitening(
            embeddings, landmark_ids, dim=self.dim, shrinkage=self.shrinkage
        )


@dataclass(frozen=True)
class TrainingSettings:
    """Everything that determines a fine-tuning run (besides the photos).

    Attributes:
        model: the embedding network to build.
        weights: ``"imagenet"`` or ``None`` (random initialisation).
        mining: ``random`` (the paper), ``batch_hard`` or ``batch_semi_hard``.
        margin: alpha of the triplet loss (the paper's best: 0.1).
        reducer: ``mean_active`` / ``mean``; ``None`` picks the loss's default for the mining.
        p: landmarks per batch.
        k: photos per landmark in a batch.
        epochs: the most epochs to run.
        learning_rate: Adam's learning rate.
        patience: epochs without a better validation hit@1 before stopping.
        seed: seed of batches, view choice and random triplets.
        output_dir: checkpoints and state go under ``output_dir/checkpoints``.
        cache: how the frozen activations are cached.
        resume: continue from the last checkpoint in ``output_dir`` when there is one.
        vote: the decision rule exported in the manifest; its threshold is calibrated after
            training (:func:`trainer.training.split_evaluation.calibrated_vote`).
        target_precision: the precision the calibrated threshold aims at.
        calibration_confidence: the one-sided confidence with which the calibration photos'
            precision must reach the target (0: their precision itself).
        whitening: the learned whitening fitted on the training photos after fine-tuning and
            exported with the model (None: none).
        objective: the loss (triplet or sub-center ArcFace) and the distillation penalty.
    """

    model: EmbeddingModelConfig
    output_dir: Path
    cache: ActivationCacheSettings
    weights: str | None = "imagenet"
    mining: str = "batch_hard"
    margin: float = DEFAULT_MARGIN
    reducer: str | None = None
    p: int = 8
    k: int = 4
    epochs: int = 10
    learning_rate: float = 1e-4
    patience: int = 3
    seed: int = 0
    resume: bool = True
    vote: VoteSettings = field(default_factory=VoteSettings)
    whitening: WhiteningSettings | None = None
    target_precision: float = DEFAULT_TARGET_PRECISION
    calibration_confidence: float = 0.0
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)

    def plain_cache(self) -> ActivationCacheSettings:
        """The activation cache of the plain photos only (view 0, no augmented views)."""
        return ActivationCacheSettings(
            cache_dir=self.cache.cache_dir,
            augmented_views=0,
            dtype=self.cache.dtype,
            batch_size=self.cache.batch_size,
            workers=self.cache.workers,
        )

    def cache_description(self) -> dict[str, Any]:
        """What the activation cache records about the network whose frozen part it caches."""
        return {
            "backbone": self.model.backbone,
            "trainable_from": self.model.trainable_from,
        }


@dataclass
class TrainingSummary:
    """What was trained on, how, and how it went; goes into the export's manifest."""

    backbone: str
    input_size: int
    trainable_from: str | None
    embedding_dim: int
    mining: str
    margin: float
    p: int
    k: int
    learning_rate: float
    seed: int
    augmented_views: int
    landmarks: int
    train_photos: int
    val_photos: int
    epochs_run: int = 0
    best_epoch: int = 0
    pretrained_val_hit_at_1: float | None = None
    best_val_hit_at_1: float | None = None
    cache_seconds: float = 0.0
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    loss: str = "triplet"
    distillation: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingResult:
    """The fine-tuned network (the best epoch's weights) and the run's summary."""

    parts: EmbeddingParts
    summary: TrainingSummary
