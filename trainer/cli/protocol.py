"""``python -m trainer.cli.protocol``: the source-held-out validation protocol (issue 8).

For each held-out source (``sources.csv``: which collection each landmark came from), fine-tune on
the landmarks of the other sources and score the pretrained and the fine-tuned network on new
photos of the trained landmarks and on the held-out source's landmarks, against one gallery that
holds the references of every landmark. Writes ``OUT.json`` and ``OUT.md`` and prints the tables.
The training flags mirror ``landmark-train``'s defaults; every flag has an environment variable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator
from pydantic_settings import NoDecode

from configuration import load_settings, setting
from configuration.base import split_commas
from trainer.cli.settings import DEFAULT_DATA_DIR, CacheSettings, CountOrNone, TextOrNone

SourceList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_commas)]


class ProtocolCommandSettings(CacheSettings):
    """The protocol command's settings: data, folds, training knobs, calibration, output.

    The training knobs repeat ``landmark-train``'s (same flags, variables and defaults).
    """

    group_title: ClassVar[str] = "protocol"

    data: Path = setting(
        DEFAULT_DATA_DIR,
        env="LANDMARK_DATA_DIR",
        help="folder of landmark folders",
    )
    sources_csv: Path | None = setting(
        None, help="landmark,source CSV (default: sources.csv next to --data)"
    )
    sources: SourceList = setting(
        default_factory=tuple,
        env="LANDMARK_PROTOCOL_SOURCES",
        help="held-out sources to run, comma-separated (default: every source)",
    )
    references: int = setting(
        3, ge=1, env="LANDMARK_PROTOCOL_REFERENCES", help="gallery references a landmark"
    )
    queries: int = setting(
        20, ge=1, env="LANDMARK_PROTOCOL_QUERIES", help="most queries a trained landmark"
    )
    unseen_queries: int = setting(
        40, ge=1, env="LANDMARK_PROTOCOL_UNSEEN_QUERIES", help="most queries an unseen landmark"
    )
    val_share: float = setting(
        0.1,
        ge=0.0,
        lt=1.0,
        env="LANDMARK_PROTOCOL_VAL_SHARE",
        help="validation share of a trained landmark's photos (early stopping, calibration)",
    )
    target_precision: float = setting(
        0.9, gt=0.0, le=1.0, help="precision the margin rule's threshold is calibrated for"
    )
    calibration_holdout: float = setting(
        0.2,
        ge=0.0,
        lt=1.0,
        help="share of trained landmarks whose references calibration removes (open-set photos)",
    )
    seed: int = setting(0, help="seed of the folds, batches and augmentation")
    out: Path = setting(
        Path("runs/protocol/protocol"),
        env="LANDMARK_PROTOCOL_OUT",
        help="report path without suffix: writes OUT.json and OUT.md",
    )
    backbone: str = setting("mobilenet_v2", help="backbone name")
    weights: TextOrNone = setting("imagenet", help="imagenet or none")
    input_size: int = setting(160, ge=32, help="side of the square input")
    trainable_from: TextOrNone = setting(
        "auto",
        help="first trainable stage (none: all frozen; auto: landmark-train's choice for the "
        "backbone)",
    )
    embedding_dim: CountOrNone = setting(0, help="Dense projection size (0: none)")
    mining: Literal["random", "batch_hard", "batch_semi_hard"] = setting(
        "random", help="triplet mining"
    )
    margin: float = setting(0.1, gt=0.0, help="triplet margin alpha")
    p: int = setting(8, ge=2, help="landmarks per batch")
    k: int = setting(4, ge=2, help="photos per landmark in a batch")
    epochs: int = setting(12, ge=1, help="most epochs")
    lr: float = setting(1e-4, gt=0.0, help="Adam learning rate")
    patience: int = setting(3, ge=1, help="early stopping patience (epochs)")
    augment_views: int = setting(4, ge=0, help="augmented views cached per training photo")
    whitening: bool = setting(
        False, help="also score each network with a learned whitening fitted on the fold"
    )
    whitening_dim: CountOrNone = setting(0, help="whitened dimension (0: the embedding's)")
    whitening_shrinkage: float = setting(
        0.2, ge=0, help="whitening ridge, as a share of the intra-landmark scatter's mean"
    )
    workers: int = setting(2, ge=1, help="photo decoding threads")
    batch_size: int = setting(
        32, ge=1, env="LANDMARK_CACHE_BATCH", help="photos per forward pass when caching"
    )


def protocol_settings(settings: ProtocolCommandSettings) -> Any:
    """The :class:`trainer.protocol.run.ProtocolSettings` the command's settings describe."""
    from trainer.cli.train import trainable_from_of
    from trainer.model.embedding import EmbeddingModelConfig
    from trainer.protocol.run import ProtocolSettings
    from trainer.training.activation_cache import ActivationCacheSettings
    from trainer.training.run import TrainingSettings, WhiteningSettings

    model = EmbeddingModelConfig(
        settings.backbone,
        settings.input_size,
        settings.embedding_dim,
        trainable_from_of(settings),  # type: ignore[arg-type]  # reads backbone, trainable_from
        seed=settings.seed,
    )
    training = TrainingSettings(
        model=model,
        output_dir=settings.out.parent,
        weights=settings.weights,
        mining=settings.mining,
        margin=settings.margin,
        p=settings.p,
        k=settings.k,
        epochs=settings.epochs,
        learning_rate=settings.lr,
        patience=settings.patience,
        seed=settings.seed,
        resume=False,
        cache=ActivationCacheSettings(
            cache_dir=settings.cache_dir / "activations",
            augmented_views=settings.augment_views,
            augmentation_seed=settings.seed,
            batch_size=settings.batch_size,
            workers=settings.workers,
        ),
    )
    return ProtocolSettings(
        training=training,
        weights_cache_dir=settings.cache_dir / "weights",
        target_precision=settings.target_precision,
        calibration_holdout=settings.calibration_holdout,
        whitening=WhiteningSettings(settings.whitening_dim, settings.whitening_shrinkage)
        if settings.whitening
        else None,
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(settings: ProtocolCommandSettings) -> dict[str, Any]:
    """Make the folds, run those asked for, write the report; returns it."""
    from schemas.preprocessing import PreprocessingSpec
    from trainer.data.loading import decodable_photos
    from trainer.data.photos import read_landmark_folders
    from trainer.protocol.folds import FoldPlan, evaluation_photos, make_folds, read_sources
    from trainer.protocol.report import protocol_report, write_report
    from trainer.protocol.run import run_protocol

    started = time.monotonic()
    # The activation cache refuses a set with an undecodable photo: leave them out first.
    photos, failed = decodable_photos(
        read_landmark_folders(settings.data),
        PreprocessingSpec(input_size=settings.input_size),
        settings.workers,
    )
    skipped = [{"path": str(photo.path), "error": str(error)} for photo, error in failed]
    for record in skipped:
        _log(f"left out {record['path']}: {record['error']}")
    sources = read_sources(settings.sources_csv or settings.data.parent / "sources.csv")
    plan = FoldPlan(
        settings.references,
        settings.queries,
        settings.unseen_queries,
        settings.val_share,
        settings.seed,
    )
    every_fold = make_folds(photos, sources, plan)
    folds = make_folds(photos, sources, plan, settings.sources) if settings.sources else every_fold
    protocol = protocol_settings(settings)
    results = run_protocol(folds, evaluation_photos(every_fold), protocol, _log)
    parameters = settings.model_dump(mode="json")
    parameters["trainable_from"] = protocol.training.model.trainable_from
    parameters["total_seconds"] = round(time.monotonic() - started, 1)
    report = protocol_report(results, parameters, protocol.ks)
    report["skipped_photos"] = skipped
    paths = write_report(settings.out, report, protocol.ks)
    _log("wrote " + ", ".join(map(str, paths)))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the protocol and print its tables; exit status 1 on bad data."""
    settings = load_settings(
        ProtocolCommandSettings,
        argv,
        prog="python -m trainer.cli.protocol",
        description="Source-held-out validation: fine-tune without one source's landmarks, "
        "score pretrained and fine-tuned networks on trained and unseen landmarks.",
    )
    try:
        report = run(settings)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from trainer.protocol.report import markdown_tables

    print(markdown_tables(report, (1, 5, 10)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
