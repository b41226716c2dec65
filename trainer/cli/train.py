"""``landmark-train``: fine-tune the triplet embedding network and export it.

Reads a folder of landmark folders (or a Google-Landmarks CSV), makes the seeded split (or reads
a ``split.json`` from ``python -m trainer.cli.split``), fine-tunes the upper stages on cached frozen
activations, evaluates hit@k on the split's query/reference parts, and exports ``model.keras`` +
``manifest.json`` into ``<output>/model``. Every flag has an environment variable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from configuration import load_settings, setting
from trainer.cli.settings import (
    CacheSettings,
    CountOrNone,
    SplitSettings,
    TextOrNone,
    manifest_parameters,
    split_photos,
)

DESCRIPTION = "Fine-tune a triplet embedding network on landmark photos and export it."

#: First trainable stage measured best per backbone (docs/results); others use the backbone's own.
MEASURED_TRAINABLE_FROM = {"mobilenet_v2": "block_15"}


class TrainSettings(SplitSettings, CacheSettings):
    """What ``landmark-train`` trains and how, built once from flags and ``LANDMARK_…`` variables.

    The split flags are the shared :class:`~trainer.cli.settings.SplitSettings` of
    ``python -m trainer.cli.split``.
    """

    group_title: ClassVar[str] = "training"

    output: Path = setting(
        Path("runs/train"), help="output folder (checkpoints, split.json, model/)"
    )
    split: Path | None = setting(
        None,
        help="existing split.json (from python -m trainer.cli.split); overrides the split flags",
    )
    seed: int = setting(0, help="seed of split, batches and augmentation")
    backbone: str = setting("mobilenet_v2", help="backbone name")
    weights: TextOrNone = setting("imagenet", help="imagenet or none")
    input_size: int = setting(160, help="side of the square input")
    trainable_from: TextOrNone = setting(
        "auto",
        help="first trainable stage (none: all frozen; auto: block_15 for mobilenet_v2, "
        "else the backbone's default)",
    )
    embedding_dim: CountOrNone = setting(0, help="Dense projection size (0: none)")
    mining: Literal["random", "batch_hard", "batch_semi_hard"] = setting(
        "random",
        help="random (the paper's; best on unseen landmarks here), batch_hard or batch_semi_hard",
    )
    margin: float = setting(0.1, help="triplet margin alpha")
    p: int = setting(8, help="landmarks per batch")
    k: int = setting(4, help="photos per landmark in a batch")
    epochs: int = setting(12, help="most epochs")
    lr: float = setting(1e-4, help="Adam learning rate")
    patience: int = setting(3, help="early stopping patience (epochs)")
    augment_views: int = setting(4, help="augmented views cached per photo")
    workers: int = setting(2, help="photo decoding threads")
    batch_size: int = setting(
        32, env="LANDMARK_CACHE_BATCH", help="photos per forward pass when caching"
    )
    no_resume: bool = setting(False, help="start over even if a checkpoint exists")
    whitening: bool = setting(
        False,
        help="fit a learned whitening on the fine-tuned training embeddings and export it "
        "with the model",
    )
    whitening_dim: CountOrNone = setting(0, help="whitened dimension (0: the embedding's)")
    whitening_shrinkage: float = setting(
        0.2, ge=0, help="whitening ridge, as a share of the intra-landmark scatter's mean"
    )
    target_precision: float = setting(
        0.9,
        gt=0,
        le=1,
        help="precision the exported 'no landmark' threshold is calibrated for",
    )


def settings_from(argv: Sequence[str] | None = None) -> TrainSettings:
    """The settings of one ``landmark-train`` run from ``argv`` and the environment."""
    return load_settings(TrainSettings, argv, prog="landmark-train", description=DESCRIPTION)


def trainable_from_of(settings: TrainSettings) -> str | None:
    """The first trainable stage, ``auto`` resolved for the backbone."""
    if settings.trainable_from != "auto":
        return settings.trainable_from
    from trainer.backbones import BACKBONES

    if settings.backbone in MEASURED_TRAINABLE_FROM:
        return MEASURED_TRAINABLE_FROM[settings.backbone]
    if settings.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {settings.backbone!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[settings.backbone].default_trainable_from


def _split(settings: TrainSettings, output: Path) -> Any:
    from trainer.splits import manifest as split_manifest

    if settings.split is not None:
        return split_manifest.read_manifest(settings.split)
    split = split_photos(settings, settings.seed, settings.input_size, settings.workers)
    split_manifest.write_manifest(
        output / split_manifest.MANIFEST_FILE,
        split,
        seed=settings.seed,
        parameters=manifest_parameters(settings),
        data_root=None if settings.csv else settings.data,
    )
    return split


def run(settings: TrainSettings) -> dict[str, Any]:
    """Train, evaluate and export; returns the training summary and evaluation as a dict."""
    from trainer.model.embedding import EmbeddingModelConfig
    from trainer.training.activation_cache import ActivationCacheSettings
    from trainer.training.pipeline import train_evaluate_export
    from trainer.training.run import TrainingSettings, WhiteningSettings

    started = time.monotonic()
    output = settings.output
    output.mkdir(parents=True, exist_ok=True)
    split = _split(settings, output)
    cache_dir = settings.cache_dir
    config = EmbeddingModelConfig(
        settings.backbone,
        settings.input_size,
        settings.embedding_dim,
        trainable_from_of(settings),
        seed=settings.seed,
    )
    training = TrainingSettings(
        model=config,
        output_dir=output,
        weights=settings.weights,
        mining=settings.mining,
        margin=settings.margin,
        p=settings.p,
        k=settings.k,
        epochs=settings.epochs,
        learning_rate=settings.lr,
        patience=settings.patience,
        seed=settings.seed,
        resume=not settings.no_resume,
        whitening=WhiteningSettings(settings.whitening_dim, settings.whitening_shrinkage)
        if settings.whitening
        else None,
        target_precision=settings.target_precision,
        cache=ActivationCacheSettings(
            cache_dir=cache_dir / "activations",
            augmented_views=settings.augment_views,
            augmentation_seed=settings.seed,
            batch_size=settings.batch_size,
            workers=settings.workers,
        ),
    )
    return train_evaluate_export(split.parts, training, cache_dir / "weights", started=started)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``landmark-train``."""
    settings = settings_from(argv)
    try:
        report = run(settings)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    training = report["training"]
    print(
        f"trained {training['backbone']} on {training['landmarks']} landmarks, "
        f"{training['train_photos']} photos, {training['epochs_run']} epochs in "
        f"{training['total_seconds']}s; best val hit@1 {training['best_val_hit_at_1']} "
        f"(pretrained {training['pretrained_val_hit_at_1']}); model {report['model_version']} "
        f"in {settings.output / 'model'}"
    )
    for name, figures in report["evaluation"].items():
        if "hit_at_k" in figures:  # the others (vote_calibration) are in training-summary.json
            hits = figures["hit_at_k"].items()
            print(f"{name}: " + ", ".join(f"hit@{k} {v:.3f}" for k, v in hits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
