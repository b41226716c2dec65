"""Triplet mining: which (anchor, positive, negative) triplets a batch contributes.

Mining is kept apart from the loss (pytorch-metric-learning's loss + miner + reducer split): each
miner takes the integer labels of a batch and a matrix of pairwise distances and returns, for every
candidate triplet, the anchor-positive distance, the anchor-negative distance and whether the
triplet is valid. The loss in :mod:`trainer.metric_learning.losses` turns those into hinge values
and a reducer averages them.

Batch miners expect batches of P landmarks x K photos (K >= 2), the layout built by
:func:`pk_batch_indices`. Graph code uses ``keras.ops`` only so it runs on TensorFlow and JAX;
the samplers that draw indices are plain numpy and run outside the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

Tensor = Any
DistanceFn = Callable[[Tensor], Tensor]
MinedDistances = tuple[Tensor, Tensor, Tensor]
"""(anchor-positive distances, anchor-negative distances, valid mask as float), same shape."""

MINING_STRATEGIES = ("random", "batch_hard", "batch_semi_hard")


def pairwise_squared_l2(embeddings: Tensor) -> Tensor:
    """Squared Euclidean distances between all rows of ``embeddings``.

    Args:
        embeddings: float tensor ``(n, d)``.

    Returns:
        ``(n, n)`` tensor; clipped at 0 because the expansion ``|a|^2 - 2ab + |b|^2`` can dip
        slightly below zero in floating point.
    """
    embeddings = ops.convert_to_tensor(embeddings)
    squared_norms = ops.sum(ops.square(embeddings), axis=1)
    dot = ops.matmul(embeddings, ops.transpose(embeddings))
    distances = ops.expand_dims(squared_norms, 1) - 2.0 * dot + ops.expand_dims(squared_norms, 0)
    return ops.maximum(distances, 0.0)


def _label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean ``(n, n)`` masks: same landmark excluding the diagonal, and different landmark."""
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    not_self = ops.logical_not(ops.cast(ops.eye(ops.shape(labels)[0]), "bool"))
    return ops.logical_and(same, not_self), ops.logical_not(same)


def explicit_triplets(distances: Tensor, triplets: Tensor) -> MinedDistances:
    """Distances for explicitly given triplets (e.g. the paper's random triplets).

    Args:
        distances: ``(n, n)`` pairwise distances of the batch.
        triplets: int ``(t, 3)`` rows of (anchor, positive, negative) indices into the batch.

    Returns:
        ``(t,)`` anchor-positive distances, anchor-negative distances, and an all-ones mask.
    """
    triplets = ops.cast(triplets, "int32")
    n = ops.shape(distances)[0]
    flat = ops.reshape(distances, (-1,))
    anchor, positive, negative = triplets[:, 0], triplets[:, 1], triplets[:, 2]
    d_ap = ops.take(flat, anchor * n + positive)
    d_an = ops.take(flat, anchor * n + negative)
    return d_ap, d_an, ops.ones_like(d_ap)


def batch_hard(labels: Tensor, distances: Tensor) -> MinedDistances:
    """Batch-hard mining (Hermans et al. 2017): per anchor, farthest positive and nearest negative.

    Args:
        labels: int ``(n,)`` landmark labels of the batch.
        distances: ``(n, n)`` pairwise distances.

    Returns:
        ``(n,)`` hardest anchor-positive and anchor-negative distances; the mask is 0 for anchors
        that have no positive or no negative in the batch.
    """
    positive_mask, negative_mask = _label_masks(labels)
    positive_f = ops.cast(positive_mask, distances.dtype)
    negative_f = ops.cast(negative_mask, distances.dtype)
    d_ap = ops.max(distances * positive_f, axis=1)
    # Push non-negatives out of the minimum with a large offset.
    big = ops.max(distances) + 1.0
    d_an = ops.min(distances + big * (1.0 - negative_f), axis=1)
    valid = ops.cast(
        ops.logical_and(ops.any(positive_mask, axis=1), ops.any(negative_mask, axis=1)),
        distances.dtype,
    )
    return d_ap, d_an, valid


def batch_semi_hard(labels: Tensor, distances: Tensor) -> MinedDistances:
    """Semi-hard mining (Schroff et al. 2015), as in TensorFlow Addons' semi-hard triplet loss.

    Every anchor-positive pair is a triplet. Its negative is the nearest negative that is farther
    from the anchor than the positive; when no such negative exists, the farthest negative is used
    (the easiest one, which keeps the hinge small instead of pulling collapsed embeddings).

    Args:
        labels: int ``(n,)`` landmark labels of the batch.
        distances: ``(n, n)`` pairwise distances.

    Returns:
        ``(n, n)`` tensors indexed [anchor, positive]; the mask is 1 where (anchor, positive) is a
        valid positive pair and the anchor has at least one negative.
    """
    positive_mask, negative_mask = _label_masks(labels)
    negative_f = ops.cast(negative_mask, distances.dtype)
    big = ops.max(distances) + 1.0
    # d_an_candidates[a, p, n] = d(a, n); semi-hard where d(a, n) > d(a, p) and n is a negative.
    d_an_all = ops.expand_dims(distances, 1)  # (a, 1, n)
    d_ap_all = ops.expand_dims(distances, 2)  # (a, p, 1)
    negative_3d = ops.expand_dims(negative_mask, 1)  # (a, 1, n)
    semi_hard = ops.logical_and(ops.greater(d_an_all, d_ap_all), negative_3d)
    semi_hard_f = ops.cast(semi_hard, distances.dtype)
    nearest_semi_hard = ops.min(d_an_all + big * (1.0 - semi_hard_f), axis=2)  # (a, p)
    farthest_negative = ops.max(distances * negative_f, axis=1, keepdims=True)  # (a, 1)
    has_semi_hard = ops.any(semi_hard, axis=2)
    d_an = ops.where(has_semi_hard, nearest_semi_hard, farthest_negative)
    has_negative = ops.any(negative_mask, axis=1, keepdims=True)
    valid = ops.cast(ops.logical_and(positive_mask, has_negative), distances.dtype)
    return distances, d_an, valid


def pk_batch_indices(
    labels: np.ndarray, p: int, k: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of P x K batches: P landmarks, K photos each, every photo used at least once.

    Landmarks with fewer than K photos are sampled with repetition so every batch has exactly
    P*K rows. Landmarks with a single photo cannot form a positive pair and are skipped.

    Args:
        labels: int ``(n,)`` landmark label of every training item.
        p: landmarks per batch (at least 2).
        k: photos per landmark in a batch (at least 2).
        rng: seeded generator; the same seed gives the same batches.

    Returns:
        List of int arrays of length ``p*k``, item indices grouped landmark by landmark.

    Raises:
        ValueError: if P or K is below 2 or fewer than P landmarks have two photos.
    """
    if p < 2 or k < 2:
        raise ValueError(f"P and K must both be at least 2 (got P={p}, K={k})")
    labels = np.asarray(labels)
    by_landmark = {label: np.flatnonzero(labels == label) for label in np.unique(labels)}
    by_landmark = {label: idx for label, idx in by_landmark.items() if len(idx) >= 2}
    if len(by_landmark) < p:
        raise ValueError(
            f"P={p} landmarks per batch, but only {len(by_landmark)} landmarks have 2+ photos"
        )
    # Split each landmark's shuffled photos into chunks of K (the last chunk topped up).
    chunks: list[tuple[int, np.ndarray]] = []
    for label, idx in by_landmark.items():
        shuffled = rng.permutation(idx)
        for start in range(0, len(shuffled), k):
            chunk = shuffled[start : start + k]
            if len(chunk) < k:
                chunk = np.concatenate([chunk, rng.choice(idx, size=k - len(chunk))])
            chunks.append((int(label), chunk))
    order = rng.permutation(len(chunks))
    pending = [chunks[i] for i in order]
    batches: list[np.ndarray] = []
    while pending:
        batch: list[np.ndarray] = []
        used: set[int] = set()
        rest: list[tuple[int, np.ndarray]] = []
        for label, chunk in pending:
            if len(batch) < p and label not in used:
                batch.append(chunk)
                used.add(label)
            else:
                rest.append((label, chunk))
        if len(batch) < p:
            # Fill the last batch with fresh chunks of landmarks not in it yet.
            spare = [lab for lab in by_landmark if lab not in used]
            for label in rng.permutation(spare)[: p - len(batch)]:
                batch.append(
                    rng.choice(by_landmark[label], size=k, replace=len(by_landmark[label]) < k)
                )
        batches.append(np.concatenate(batch))
        pending = rest
    return batches


def sample_random_triplets(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's random triplets: each anchor with one random positive and one random negative.

    Args:
        labels: int ``(n,)`` labels of a batch.
        rng: seeded generator.

    Returns:
        int32 ``(t, 3)`` rows (anchor, positive, negative); anchors without a positive or a
        negative in the batch are left out.
    """
    labels = np.asarray(labels)
    rows = []
    for anchor, label in enumerate(labels):
        positives = np.flatnonzero(labels == label)
        positives = positives[positives != anchor]
        negatives = np.flatnonzero(labels != label)
        if len(positives) and len(negatives):
            rows.append((anchor, rng.choice(positives), rng.choice(negatives)))
    return np.asarray(rows, dtype=np.int32).reshape(-1, 3)


def mine(
    strategy: str, labels: Tensor, distances: Tensor, triplets: Tensor | None = None
) -> MinedDistances:
    """Dispatch to a mining strategy by name (one of :data:`MINING_STRATEGIES`).

    Raises:
        ValueError: unknown strategy, or ``random`` without explicit triplets.
    """
    if strategy == "random":
        if triplets is None:
            raise ValueError("random mining needs explicit (anchor, positive, negative) triplets")
        return explicit_triplets(distances, triplets)
    if strategy == "batch_hard":
        return batch_hard(labels, distances)
    if strategy == "batch_semi_hard":
        return batch_semi_hard(labels, distances)
    raise ValueError(f"unknown mining strategy {strategy!r}; expected one of {MINING_STRATEGIES}")


__all__ = [
    "MINING_STRATEGIES",
    "batch_hard",
    "batch_semi_hard",
    "explicit_triplets",
    "mine",
    "pairwise_squared_l2",
    "pk_batch_indices",
    "sample_random_triplets",
]
