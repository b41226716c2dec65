"""Recognition metrics: the landmark the worker would publish, measured on queries, and GAP.

Pure numpy functions of embeddings and labels:

- :func:`vote_accuracy` — what the worker will publish: the kNN vote of
  :func:`schemas.vote.decide_landmark` with its unknown threshold, and a threshold sweep.
- :func:`gap` — Google-Landmarks' Global Average Precision.

The exact search under them is :func:`trainer.evaluation.retrieval.nearest_references`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.tag_event import MAX_DISTANCE, Neighbour
from schemas.vote import VoteSettings, decide_landmark
from trainer.evaluation.retrieval import nearest_references, validated_pair

DEFAULT_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(21))


def _check_unit(matrix: np.ndarray, name: str) -> None:
    norms = np.linalg.norm(matrix, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        worst = float(norms[np.argmax(np.abs(norms - 1.0))])
        raise ValueError(
            f"{name} must be unit vectors (the vote's distances assume it); found norm {worst:.4f}"
        )


@dataclass(frozen=True)
class VotePoint:
    """The vote's outcome at one threshold."""

    threshold: float
    accuracy: float
    unknown_rate: float
    precision: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class VoteReport:
    """The decision the worker publishes, measured on queries.

    Attributes:
        settings: the vote settings (k, weighting, threshold) measured.
        at_threshold: accuracy, unknown rate and precision at ``settings.threshold``.
        sweep: the same at each threshold of the sweep.
        predictions: per query, the winning landmark id before the threshold (None if no
            neighbours), and ``confidences`` its confidence; inputs to :func:`gap`.
    """

    settings: VoteSettings
    at_threshold: VotePoint
    sweep: list[VotePoint]
    predictions: list[str | None]
    confidences: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            **self.at_threshold.to_dict(),
            "sweep": [point.to_dict() for point in self.sweep],
        }


def neighbours_of_queries(
    query_emb: np.ndarray,
    ref_emb: np.ndarray,
    ref_labels: Sequence[str],
    ref_names: Sequence[str],
    k: int,
    ref_ids: Sequence[str] | None = None,
) -> list[list[Neighbour]]:
    """The k nearest references of each query as :class:`Neighbour` records, as the worker's
    index returns them (distance = squared Euclidean distance)."""
    indices, distances = nearest_references(query_emb, ref_emb, k)
    # Unit vectors are at most 4 apart; rounding can overshoot by an ulp or two.
    distances = np.minimum(distances, MAX_DISTANCE)
    ids = ref_ids if ref_ids is not None else [str(index) for index in range(len(ref_labels))]
    return [
        [
            Neighbour(
                reference_id=ids[index],
                landmark_id=ref_labels[index],
                landmark_name=ref_names[index],
                distance=float(distance),
            )
            for index, distance in zip(row, row_distances, strict=True)
        ]
        for row, row_distances in zip(indices, distances, strict=True)
    ]


def _vote_point(
    threshold: float, published: Sequence[str | None], expected: Sequence[str | None]
) -> VotePoint:
    answered = [(p, e) for p, e in zip(published, expected, strict=True) if p is not None]
    correct = sum(p == e for p, e in zip(published, expected, strict=True))
    return VotePoint(
        threshold=threshold,
        accuracy=correct / len(published),
        unknown_rate=1.0 - len(answered) / len(published),
        precision=(sum(p == e for p, e in answered) / len(answered)) if answered else None,
    )


def vote_accuracy(
    query_emb: np.ndarray,
    query_labels: Sequence[str],
    ref_emb: np.ndarray,
    ref_labels: Sequence[str],
    ref_names: Sequence[str],
    settings: VoteSettings,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
) -> VoteReport:
    """Accuracy of the landmark the worker would publish for each query.

    Each query's k nearest references go through :func:`schemas.vote.decide_landmark`, the
    worker's own decision. The right answer for a query is its landmark when the references
    include that landmark, and "unknown" (None) when they do not (an open-set query).

    Returns:
        accuracy (published == right answer, over all queries), unknown rate (share of queries
        published as unknown), precision (accuracy over the queries answered with a landmark;
        None when none were), at ``settings.threshold`` and over ``thresholds``.
    """
    queries, references = validated_pair(query_emb, query_labels, ref_emb, ref_labels)
    _check_unit(queries, "query embeddings")
    _check_unit(references, "reference embeddings")
    if len(ref_names) != len(ref_labels):
        raise ValueError(f"{len(ref_names)} reference names for {len(ref_labels)} references")
    neighbours = neighbours_of_queries(query_emb, ref_emb, ref_labels, ref_names, settings.k)
    known = set(ref_labels)
    expected = [label if label in known else None for label in query_labels]

    unthresholded = [
        decide_landmark(row, dataclasses.replace(settings, threshold=0.0)) for row in neighbours
    ]
    predictions = [lm.landmark_id if lm is not None else None for lm, _ in unthresholded]
    confidences = [float(confidence) for _, confidence in unthresholded]
    # The worker's own call at its threshold ...
    published = [decide_landmark(row, settings)[0] for row in neighbours]
    # ... and the sweep from decide_landmark's contract (winner and confidence do not depend on
    # the threshold; below it the answer is None), without re-voting once per threshold.

    def published_at(threshold: float) -> list[str | None]:
        return [
            prediction if confidence >= threshold else None
            for prediction, confidence in zip(predictions, confidences, strict=True)
        ]

    return VoteReport(
        settings=settings,
        at_threshold=_vote_point(
            settings.threshold,
            [landmark.landmark_id if landmark is not None else None for landmark in published],
            expected,
        ),
        sweep=[_vote_point(t, published_at(t), expected) for t in thresholds],
        predictions=predictions,
        confidences=confidences,
    )


def gap(
    predictions: Sequence[str | None],
    confidences: Sequence[float],
    truths: Sequence[str | None],
) -> float:
    """Global Average Precision (Google-Landmarks' recognition metric; Perronnin et al.).

    With one prediction a query, sorted by confidence (highest first; ties keep input order):
    ``GAP = 1/M * sum_i P(i) * rel(i)``, where ``P(i)`` is the precision among the first i
    predictions, ``rel(i)`` is 1 when prediction i is right, and M is the number of queries
    that have a true landmark. A query without a prediction (None) is left out of the ranking
    but still counts in M; a query without a true landmark (None) that gets a prediction is a
    wrong prediction.

    Raises:
        ValueError: lengths disagree or no query has a true landmark.
    """
    if not len(predictions) == len(confidences) == len(truths):
        raise ValueError(
            f"{len(predictions)} predictions, {len(confidences)} confidences, {len(truths)} truths"
        )
    relevant_queries = sum(truth is not None for truth in truths)
    if relevant_queries == 0:
        raise ValueError("GAP is undefined without a query that has a true landmark")
    ranked = [
        (confidence, prediction == truth and truth is not None)
        for prediction, confidence, truth in zip(predictions, confidences, truths, strict=True)
        if prediction is not None
    ]
    order = np.argsort(-np.asarray([c for c, _ in ranked], dtype=np.float64), kind="stable")
    correct_so_far = 0
    total = 0.0
    for position, index in enumerate(order, start=1):
        if ranked[index][1]:
            correct_so_far += 1
            total += correct_so_far / position
    return total / relevant_queries
