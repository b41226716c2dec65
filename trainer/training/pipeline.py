"""The training job once its settings are built: fine-tune, evaluate on the split, export.

What ``landmark-train`` runs after reading the photos and making (or reading) the split: builds the
embedding network, fine-tunes it (:func:`trainer.training.fine_tune.fine_tune`), measures hit@k on
the split's known and held-out landmarks and calibrates the decision rule's threshold for a target
precision (:mod:`trainer.training.split_evaluation`), exports
``model.keras`` + ``manifest.json`` into ``<output>/model`` and writes
``<output>/training-summary.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from schemas.preprocessing import PreprocessingSpec
from trainer.data.photos import Photo
from trainer.model.embedding import EmbeddingParts, assemble, build_embedding_model
from trainer.model.export import export_model
from trainer.model.whitening import Whitening, with_whitening
from trainer.training.fine_tune import fine_tune
from trainer.training.run import TrainingSettings
from trainer.training.split_evaluation import (
    calibrated_vote,
    evaluate_split,
    plain_embeddings,
)

SUMMARY_FILE = "training-summary.json"


def train_evaluate_export(
    split_parts: dict[str, list[Photo]],
    settings: TrainingSettings,
    weights_cache_dir: Path,
    *,
    started: float | None = None,
) -> dict[str, Any]:
    """Fine-tune on the split's ``train`` (and ``val``) photos, evaluate, export.

    Args:
        split_parts: the split's photos by part (``train``, ``val``, ``reference``, ``query``,
            ``heldout_reference``, ``heldout_query``; ``train`` is required).
        settings: the run's settings; the export goes to ``settings.output_dir / "model"``.
        weights_cache_dir: where converted pretrained weights are cached.
        started: ``time.monotonic()`` when the job began (its ``total_seconds`` then include
            reading and splitting the photos); default: now.

    Returns:
        The report also written to ``training-summary.json``: the model version, the training
        summary and the evaluation.

    Raises:
        ValueError: too few landmarks for P, or photos that cannot be decoded.
        OSError: the output folder cannot be written.
    """
    started = time.monotonic() if started is None else started
    config = settings.model
    parts = build_embedding_model(config, settings.weights, cache_dir=weights_cache_dir)
    result = fine_tune(parts, split_parts["train"], split_parts.get("val", []), settings)
    whitening = _fit_whitening(result.parts, split_parts["train"], settings)
    evaluation = evaluate_split(result.parts, split_parts, settings, whitening=whitening)
    vote, calibration = calibrated_vote(
        result.parts,
        split_parts,
        settings,
        settings.vote,
        settings.target_precision,
        whitening=whitening,
    )
    if calibration is not None:
        evaluation["vote_calibration"] = calibration.to_dict()
    summary = result.summary.to_dict()
    summary["whitening"] = settings.whitening.to_dict() if settings.whitening else None
    summary["total_seconds"] = round(time.monotonic() - started, 1)
    model = assemble(result.parts)
    manifest = export_model(
        with_whitening(model, whitening) if whitening is not None else model,
        backbone=config.backbone,
        out_dir=settings.output_dir / "model",
        preprocessing=PreprocessingSpec(input_size=config.input_size),
        vote=vote,
        training=summary,
        evaluation=evaluation,
    )
    report = {
        "model_version": manifest.model_version,
        "training": summary,
        "evaluation": evaluation,
    }
    (settings.output_dir / SUMMARY_FILE).write_text(json.dumps(report, indent=2, default=str))
    return report


def _fit_whitening(
    parts: EmbeddingParts, train: list[Photo], settings: TrainingSettings
) -> Whitening | None:
    """The learned whitening of the fine-tuned embeddings of the training photos, if asked for."""
    if settings.whitening is None:
        return None
    return settings.whitening.fit(
        plain_embeddings(parts, train, settings), [p.landmark_id for p in train]
    )
