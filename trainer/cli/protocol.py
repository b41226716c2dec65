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
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator
from pydantic_settings import NoDecode

from configuration import load_settings, setting
from configuration.base import split_commas
from trainer.cli.settings import DEFAULT_DATA_DIR, CacheSettings
from trainer.cli.training_options import TrainingOptions

SourceList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_commas)]


class ProtocolCommandSettings(CacheSettings, TrainingOptions):
    """The protocol command's settings: data, folds, training knobs, calibration, output.

    The training knobs are ``landmark-train``'s group (same flags, variables and defaults);
    ``--whitening`` also scores each network after a whitening fitted on the fold.
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
    calibration_holdout: float = setting(
        0.2,
        ge=0.0,
        lt=1.0,
        help="share of trained landmarks whose references calibration removes (open-set photos)",
    )
    seed: int = setting(0, help="seed of the folds, batches and augmentation")
    expansions: bool = setting(
        False,
        env="LANDMARK_PROTOCOL_EXPANSIONS",
        help="also score the best network with database-side augmentation (_dba), "
        "alpha-query expansion (_qe) and both (_dba_qe)",
    )
    qe_neighbours: int = setting(
        2,
        ge=1,
        env="LANDMARK_PROTOCOL_QE_NEIGHBOURS",
        help="neighbours added to a query by alpha-QE",
    )
    dba_neighbours: int = setting(
        1,
        ge=1,
        env="LANDMARK_PROTOCOL_DBA_NEIGHBOURS",
        help="neighbours added to a reference by DBA",
    )
    expansion_alpha: float = setting(
        3.0,
        ge=0,
        env="LANDMARK_PROTOCOL_EXPANSION_ALPHA",
        help="similarity power of alpha-QE and DBA",
    )
    store: bool = setting(
        True,
        env="LANDMARK_PROTOCOL_STORE",
        help="keep each fold's fine-tuned embeddings under CACHE_DIR/protocol and re-use them "
        "when the training settings and photos are the same (re-scoring without re-training)",
    )
    out: Path = setting(
        Path("runs/protocol/protocol"),
        env="LANDMARK_PROTOCOL_OUT",
        help="report path without suffix: writes OUT.json and OUT.md",
    )


def protocol_settings(settings: ProtocolCommandSettings) -> Any:
    """The protocol's run settings from the command's."""
    from trainer.protocol.run import ProtocolSettings

    training = settings.training_settings(
        output_dir=settings.out.parent,
        cache_dir=settings.cache_dir,
        seed=settings.seed,
        resume=False,
    )
    return ProtocolSettings(
        training=training,
        weights_cache_dir=settings.cache_dir / "weights",
        target_precision=settings.target_precision,
        calibration_confidence=settings.calibration_confidence,
        calibration_holdout=settings.calibration_holdout,
        whitening=training.whitening,
        expansions=expansions(settings) if settings.expansions else {},
        embeddings_dir=settings.cache_dir / "protocol" if settings.store else None,
    )


def expansions(settings: ProtocolCommandSettings) -> dict[str, Any]:
    """The expansions ``--expansions`` scores, by network suffix."""
    from trainer.evaluation.expansion import Expansion

    alpha = settings.expansion_alpha
    return {
        "dba": Expansion(gallery_neighbours=settings.dba_neighbours, alpha=alpha),
        "qe": Expansion(query_neighbours=settings.qe_neighbours, alpha=alpha),
        "dba_qe": Expansion(settings.qe_neighbours, settings.dba_neighbours, alpha),
    }


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
