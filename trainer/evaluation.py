"""Retrieval and recognition metrics, as in the paper and as the worker publishes.

Pure numpy functions of embeddings and labels:

- :func:`hit_at_k` — the paper's metric: the true landmark is among the labels of the k nearest
  references (exact search, squared Euclidean distance between unit embeddings).
- :func:`random_hit_at_k` — its exact expected value for random guessing.
- :func:`vote_accuracy` — what the worker will publish: the kNN vote of
  :func:`schemas.vote.decide_landmark` with its unknown threshold, and a threshold sweep.
- :func:`gap` — Google-Landmarks' Global Average Precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import comb
from typing import Any

import numpy as np

from schemas.tag_event import MAX_DISTANCE, Neighbour
from schemas.vote import VoteSettings, decide_landmark

DEFAULT_KS = tuple(range(1, 51))
DEFAULT_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(21))


def _as_matrix(embeddings: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return matrix


def _check_pair(
    query_emb: np.ndarray,
    query_labels: Sequence[str],
    ref_emb: np.ndarray,
    ref_labels: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    queries = _as_matrix(query_emb, "query embeddings")
    references = _as_matrix(ref_emb, "reference embeddings")
    if queries.shape[1] != references.shape[1]:
        raise ValueError(
            f"query dimension {queries.shape[1]} != reference dimension {references.shape[1]}"
        )
    if len(query_labels) != len(queries):
        raise ValueError(f"{len(query_labels)} query labels for {len(queries)} queries")
    if len(ref_labels) != len(references):
        raise ValueError(f"{len(ref_labels)} reference labels for {len(references)} references")
    if len(references) == 0:
        raise ValueError("no references to search")
    if len(queries) == 0:
        raise ValueError("no queries to evaluate")
    return queries, references


def _check_unit(matrix: np.ndarray, name: str) -> None:
    norms = np.linalg.norm(matrix, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        worst = float(norms[np.argmax(np.abs(norms - 1.0))])
        raise ValueError(
            f"{name} must be unit vectors (the vote's distances assume it); found norm {worst:.4f}"
        )


def squared_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(n_queries, n_references)``, clipped at zero."""
    q = np.asarray(queries, dtype=np.float64)
    r = np.asarray(references, dtype=np.float64)
    distances = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * q @ r.T
    clipped: np.ndarray = np.maximum(distances, 0.0)
    return clipped


def _sorted_top_k(block: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the k smallest entries, ordered by (value, index).

    Exact, ties included: a partial partition finds each row's k-th smallest value, every entry
    up to it is a candidate (more than k when values tie at the boundary), and the candidates
    are sorted by value then index. O(n) per row instead of a full sort.
    """
    n = block.shape[1]
    if k >= n:
        return np.argsort(block, axis=1, kind="stable")
    kth = np.partition(block, k - 1, axis=1)[:, k - 1]
    order = np.empty((len(block), k), dtype=np.int64)
    for row, (values, boundary) in enumerate(zip(block, kth, strict=True)):
        candidates = np.flatnonzero(values <= boundary)
        ranked = candidates[np.argsort(values[candidates], kind="stable")]
        order[row] = ranked[:k]
    return order


def nearest_references(
    query_emb: np.ndarray, ref_emb: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest references of every query.

    Ties in distance are broken by reference index, so results are deterministic.

    Returns:
        ``(indices, distances)``, both ``(n_queries, min(k, n_references))``, nearest first;
        distances are squared Euclidean.

    Raises:
        ValueError: k below 1, or embeddings that are not finite 2-D arrays of one dimension.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    queries = _as_matrix(query_emb, "query embeddings")
    references = _as_matrix(ref_emb, "reference embeddings")
    if queries.shape[1] != references.shape[1]:
        raise ValueError(
            f"query dimension {queries.shape[1]} != reference dimension {references.shape[1]}"
        )
    k = min(k, len(references))
    indices = np.empty((len(queries), k), dtype=np.int64)
    distances = np.empty((len(queries), k), dtype=np.float64)
    step = _query_block(len(references))
    for start in range(0, len(queries), step):
        block = squared_distances(queries[start : start + step], references)
        order = _sorted_top_k(block, k)
        indices[start : start + len(block)] = order
        distances[start : start + len(block)] = np.take_along_axis(block, order, axis=1)
    return indices, distances


def _query_block(n_references: int) -> int:
    # Bounds a block of the distance matrix to about 16 M entries (128 MB of float64).
    return max(1, min(1024, 16_000_000 // max(n_references, 1)))


def _label_codes(
    query_labels: Sequence[str], ref_labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for labels; a query label without a reference gets -1."""
    codes = {label: code for code, label in enumerate(sorted(set(ref_labels)))}
    ref_codes = np.fromiter((codes[label] for label in ref_labels), np.int64, len(ref_labels))
    query_codes = np.fromiter(
        (codes.get(label, -1) for label in query_labels), np.int64, len(query_labels)
    )
    return query_codes, ref_codes


def first_hit_ranks(
    query_emb: np.ndarray,
    query_labels: Sequence[str],
    ref_emb: np.ndarray,
    ref_labels: Sequence[str],
    max_rank: int | None = None,
) -> np.ndarray:
    """For each query, the 1-based rank of the nearest reference of its landmark.

    Args:
        max_rank: look only this deep (all references when None); a query whose first hit is
            deeper gets 0, like a query whose landmark has no reference.

    Returns:
        ``int64`` ranks, 0 for no hit within ``max_rank``.
    """
    queries, references = _check_pair(query_emb, query_labels, ref_emb, ref_labels)
    query_codes, ref_codes = _label_codes(query_labels, ref_labels)
    depth = len(references) if max_rank is None else min(max_rank, len(references))
    ranks = np.zeros(len(queries), dtype=np.int64)
    step = _query_block(len(references))
    for start in range(0, len(queries), step):
        block = squared_distances(queries[start : start + step], references)
        order = _sorted_top_k(block, depth)[:, :depth]
        matches = ref_codes[order] == query_codes[start : start + len(block), None]
        found = matches.any(axis=1)
        ranks[start : start + len(block)] = np.where(found, matches.argmax(axis=1) + 1, 0)
    return ranks


def _clamped(ks: Iterable[int], n_references: int) -> list[tuple[int, int]]:
    pairs = []
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        pairs.append((k, min(k, n_references)))
    return pairs


def hit_at_k(
    query_emb: np.ndarray,
    query_labels: Sequence[str],
    ref_emb: np.ndarray,
    ref_labels: Sequence[str],
    ks: Iterable[int] = DEFAULT_KS,
) -> dict[int, float]:
    """The paper's hit@k: the fraction of queries whose landmark is among the labels of their
    k nearest references.

    Exact search by squared Euclidean distance (on unit embeddings, the same order as cosine).
    For k above the number of references, k is clamped to it. A query whose landmark has no
    reference can never hit and counts as a miss.

    Returns:
        k → hit rate in [0, 1], for every k in ``ks``.

    Raises:
        ValueError: shapes disagree, there are no queries or no references, or a k < 1.
    """
    pairs = _clamped(ks, len(ref_labels))
    if not pairs:
        return {}
    depth = max(clamped for _, clamped in pairs)
    ranks = first_hit_ranks(query_emb, query_labels, ref_emb, ref_labels, max_rank=depth)
    hits = ranks > 0
    return {k: float(np.mean(hits & (ranks <= clamped))) for k, clamped in pairs}


def random_hit_at_k(
    ref_labels: Sequence[str], query_labels: Sequence[str], ks: Iterable[int] = DEFAULT_KS
) -> dict[int, float]:
    """The exact expected hit@k of random guessing.

    Random guessing ranks the references in a uniformly random order, so the k nearest are a
    random k-subset; with n references of which m carry the query's landmark, the chance that
    the subset holds at least one is ``1 - C(n - m, k) / C(n, k)``, averaged over the queries.

    Returns:
        k → expected hit rate, for every k in ``ks`` (k clamped to the number of references).
    """
    n = len(ref_labels)
    if n == 0:
        raise ValueError("no references")
    if len(query_labels) == 0:
        raise ValueError("no queries")
    per_label: dict[str, int] = {}
    for label in ref_labels:
        per_label[label] = per_label.get(label, 0) + 1
    matching: dict[int, int] = {}  # m → how many queries have m matching references
    for label in query_labels:
        m = per_label.get(label, 0)
        matching[m] = matching.get(m, 0) + 1
    result = {}
    for k, clamped in _clamped(ks, n):
        total = sum(
            count * (1 - Fraction(comb(n - m, clamped), comb(n, clamped)))
            for m, count in matching.items()
        )
        result[k] = float(total / len(query_labels))
    return result


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
    queries, references = _check_pair(query_emb, query_labels, ref_emb, ref_labels)
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
