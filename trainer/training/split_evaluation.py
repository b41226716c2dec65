"""Evaluating a fine-tuned network on its split, and calibrating its "no landmark" threshold.

Embeds the plain photos through the same activation cache as training, for the landmarks
trained on (``known``) and the landmarks held out of training (``heldout``). The decision rule's
threshold is calibrated on the split's queries against its references for a target precision,
with the references of a seeded share of landmarks left out of the calibration gallery so that
photos of landmarks the gallery does not hold count too (a deployment meets those).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from schemas.vote import VoteSettings
from trainer.data.photos import Photo, seeded_order
from trainer.evaluation.calibration import DEFAULT_TARGET_PRECISION, Calibration
from trainer.evaluation.decisions import Embedded, calibrate
from trainer.evaluation.retrieval import hit_at_k
from trainer.model.embedding import EmbeddingParts
from trainer.model.whitening import Whitening
from trainer.training.activation_cache import cached_activations
from trainer.training.run import TrainingSettings

EVALUATION_PAIRS = {
    "known": ("reference", "query"),
    "heldout": ("heldout_reference", "heldout_query"),
}


def plain_embeddings(
    parts: EmbeddingParts,
    photos: Sequence[Photo],
    settings: TrainingSettings,
    whitening: Whitening | None = None,
) -> np.ndarray:
    """Embeddings of the plain (un-augmented) photos, through the activation cache.

    With ``whitening``, the embeddings of the exported model: whitened and re-normalised.
    """
    acts = cached_activations(
        parts.frozen,
        [p.path for p in photos],
        settings.model.input_size,
        settings.plain_cache(),
        settings.cache_description(),
    )
    out = [
        keras.ops.convert_to_numpy(
            parts.trainable(np.asarray(acts[i : i + 128, 0], np.float32), training=False)
        )
        for i in range(0, len(acts), 128)
    ]
    embeddings = np.concatenate(out).astype(np.float32)
    return whitening.apply(embeddings) if whitening is not None else embeddings


def evaluate_split(
    parts: EmbeddingParts,
    split_parts: dict[str, list[Photo]],
    settings: TrainingSettings,
    ks: Sequence[int] = (1, 5, 10, 20, 50),
    whitening: Whitening | None = None,
) -> dict[str, Any]:
    """hit@k of queries against references for trained (``known``) and held-out landmarks.

    Returns:
        ``{"known": {...}, "heldout": {...}}`` for the pairs present in the split, each with
        reference/query counts and ``hit_at_k`` (k → rate).
    """
    results: dict[str, Any] = {}
    for name, (reference_part, query_part) in EVALUATION_PAIRS.items():
        references, queries = split_parts.get(reference_part), split_parts.get(query_part)
        if not references or not queries:
            continue
        hits = hit_at_k(
            plain_embeddings(parts, queries, settings, whitening),
            [p.landmark_id for p in queries],
            plain_embeddings(parts, references, settings, whitening),
            [p.landmark_id for p in references],
            ks=list(ks),
        )
        results[name] = {
            "references": len(references),
            "queries": len(queries),
            "landmarks": len({p.landmark_id for p in references}),
            "hit_at_k": {int(k): float(v) for k, v in hits.items()},
        }
    return results


#: Share of landmarks whose references are left out of the calibration gallery.
UNKNOWN_SHARE = 0.2


def calibrated_vote(
    parts: EmbeddingParts,
    split_parts: dict[str, list[Photo]],
    settings: TrainingSettings,
    rule: VoteSettings,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    whitening: Whitening | None = None,
) -> tuple[VoteSettings, Calibration | None]:
    """``rule`` with its threshold calibrated on the split's queries against its references.

    The same procedure as the source-held-out protocol's (:func:`calibrate`): every query is
    searched among all references (right answer: its landmark), and the queries of a seeded
    :data:`UNKNOWN_SHARE` of the landmarks again among the references without theirs (right
    answer: "no landmark"); the precision must reach the target with
    ``settings.calibration_confidence``.

    Returns:
        The vote settings with the calibrated threshold and the calibration, or ``rule``
        unchanged and None when the split has no queries or references to calibrate on.
    """
    references = split_parts.get("reference", []) + split_parts.get("heldout_reference", [])
    queries = split_parts.get("query", []) + split_parts.get("heldout_query", [])
    landmarks = sorted({p.landmark_id for p in references})
    if not queries or len(landmarks) < 2:
        return rule, None
    calibration = calibrate(
        _embedded(parts, queries, settings, whitening),
        _embedded(parts, references, settings, whitening),
        sorted(_left_out_landmarks(references, settings.seed)),
        rule,
        target_precision,
        settings.calibration_confidence,
    )
    return dataclasses.replace(rule, threshold=calibration.threshold), calibration


def _embedded(
    parts: EmbeddingParts,
    photos: Sequence[Photo],
    settings: TrainingSettings,
    whitening: Whitening | None,
) -> Embedded:
    return Embedded(
        plain_embeddings(parts, photos, settings, whitening),
        tuple(p.landmark_id for p in photos),
        tuple(p.landmark_name for p in photos),
    )


def _left_out_landmarks(references: Sequence[Photo], seed: int) -> set[str]:
    """A seeded share of the landmarks (at least one, never all)."""
    first_photo: dict[str, Photo] = {}
    for photo in seeded_order(references, seed):
        first_photo.setdefault(photo.landmark_id, photo)
    order = [p.landmark_id for p in seeded_order(first_photo.values(), seed + 1)]
    count = min(len(order) - 1, max(1, round(UNKNOWN_SHARE * len(order))))
    return set(order[:count])
