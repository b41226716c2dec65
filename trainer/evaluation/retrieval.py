"""Retrieval metrics, as in the paper: exact nearest references and hit@k.

Pure numpy functions of embeddings and labels:

- :func:`nearest_references` — exact k nearest references (squared Euclidean distance between
  unit embeddings, ties broken by reference index).
- :func:`hit_at_k` — the paper's metric: the true landmark is among the labels of the k nearest
  references.
- :func:`random_hit_at_k` — its exact expected value for random guessing.

The recognition metrics (the worker's vote, GAP) are in :mod:`trainer.evaluation.recognition`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from math import comb

import numpy as np

DEFAULT_KS = tuple(range(1, 51))


def _as_matrix(embeddings: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return matrix


def validated_pair(
    query_emb: np.ndarray,
    query_labels: Sequence[str],
    ref_emb: np.ndarray,
    ref_labels: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Query and reference embeddings as float64 matrices, checked against their labels.

    Returns:
        ``(queries, references)``.

    Raises:
        ValueError: not finite 2-D arrays of one dimension, label counts that disagree, or no
            queries or no references.
    """
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
    queries, references = validated_pair(query_emb, query_labels, ref_emb, ref_labels)
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
