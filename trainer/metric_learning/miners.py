"""Triplet miners: which (anchor, positive, negative) triplets a batch contributes.

Mining is kept apart from the loss (pytorch-metric-learning's loss + miner + reducer split): a
miner returns *indices* into the batch, never distances or loss values. The batch miners take the
integer labels of a batch and its pairwise distance matrix
(:mod:`trainer.metric_learning.distances`) and return :class:`MinedTriplets`: index tensors of a
fixed shape with a validity mask (a graph cannot drop rows). The loss in
:mod:`trainer.metric_learning.losses` reads the triplets' distances back from the same matrix.

The paper's random triplets are drawn outside the graph, in numpy, from a seeded generator
(:func:`sample_random_triplets`), so the draw is the same on every backend;
:func:`triplets_from_rows` turns such rows into :class:`MinedTriplets` inside the graph.

Batch miners expect batches of P landmarks x K photos (K >= 2), the layout built by
:func:`trainer.metric_learning.samplers.pk_batch_indices`. Graph code uses ``keras.ops`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from keras import ops

Tensor = Any

__all__ = [
    "BATCH_MINERS",
    "MINING_STRATEGIES",
    "MinedTriplets",
    "batch_hard",
    "batch_semi_hard",
    "mine",
    "sample_random_triplets",
    "triplets_from_rows",
]


class MinedTriplets(NamedTuple):
    """Index triplets into a batch, all four tensors of the same shape.

    Attributes:
        anchors: int anchor indices.
        positives: int positive indices (same landmark as the anchor).
        negatives: int negative indices (another landmark).
        valid: float mask, 1 where the triplet exists; the indices of an invalid triplet are
            arbitrary (but in range) and must be masked out by the loss.
    """

    anchors: Tensor
    positives: Tensor
    negatives: Tensor
    valid: Tensor


BatchMiner = Callable[[Tensor, Tensor], MinedTriplets]


def _label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean ``(n, n)`` masks: same landmark excluding the diagonal, and different landmark."""
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
    not_self = ops.logical_not(ops.cast(ops.eye(ops.shape(labels)[0]), "bool"))
    return ops.logical_and(same, not_self), ops.logical_not(same)


def _farthest(distances: Tensor, mask: Tensor, axis: int = 1) -> Tensor:
    """Index of the largest distance where ``mask`` holds (arbitrary where it holds nowhere)."""
    below = ops.min(distances) - 1.0
    return ops.cast(ops.argmax(ops.where(mask, distances, below), axis=axis), "int32")


def _nearest(distances: Tensor, mask: Tensor, axis: int = 1) -> Tensor:
    """Index of the smallest distance where ``mask`` holds (arbitrary where it holds nowhere)."""
    above = ops.max(distances) + 1.0
    return ops.cast(ops.argmin(ops.where(mask, distances, above), axis=axis), "int32")


def batch_hard(labels: Tensor, distances: Tensor) -> MinedTriplets:
    """Batch-hard mining (Hermans et al. 2017): per anchor, farthest positive and nearest negative.

    Args:
        labels: int ``(n,)`` landmark labels of the batch.
        distances: ``(n, n)`` pairwise distances.

    Returns:
        ``(n,)`` triplets, one per anchor; invalid for anchors that have no positive or no
        negative in the batch.
    """
    positive_mask, negative_mask = _label_masks(labels)
    valid = ops.cast(
        ops.logical_and(ops.any(positive_mask, axis=1), ops.any(negative_mask, axis=1)),
        distances.dtype,
    )
    anchors = ops.arange(ops.shape(distances)[0], dtype="int32")
    return MinedTriplets(
        anchors, _farthest(distances, positive_mask), _nearest(distances, negative_mask), valid
    )


def batch_semi_hard(labels: Tensor, distances: Tensor) -> MinedTriplets:
    """Semi-hard mining (Schroff et al. 2015), as in TensorFlow Addons' semi-hard triplet loss.

    Every anchor-positive pair is a triplet. Its negative is the nearest negative that is farther
    from the anchor than the positive; when no such negative exists, the farthest negative is used
    (the easiest one, which keeps the hinge small instead of pulling collapsed embeddings).

    Args:
        labels: int ``(n,)`` landmark labels of the batch.
        distances: ``(n, n)`` pairwise distances.

    Returns:
        ``(n, n)`` triplets indexed [anchor, positive]; valid where (anchor, positive) is a
        positive pair and the anchor has at least one negative.
    """
    positive_mask, negative_mask = _label_masks(labels)
    # Candidate [a, p, n] is semi-hard where d(a, n) > d(a, p) and n is a negative of a.
    d_an_all = ops.expand_dims(distances, 1)  # (a, 1, n)
    d_ap_all = ops.expand_dims(distances, 2)  # (a, p, 1)
    semi_hard = ops.logical_and(ops.greater(d_an_all, d_ap_all), ops.expand_dims(negative_mask, 1))
    nearest_semi_hard = _nearest(d_an_all, semi_hard, axis=2)  # (a, p)
    farthest_negative = ops.expand_dims(_farthest(distances, negative_mask), 1)  # (a, 1)
    negatives = ops.where(ops.any(semi_hard, axis=2), nearest_semi_hard, farthest_negative)
    has_negative = ops.any(negative_mask, axis=1, keepdims=True)
    valid = ops.cast(ops.logical_and(positive_mask, has_negative), distances.dtype)
    index = ops.arange(ops.shape(distances)[0], dtype="int32")
    grid = ops.zeros_like(negatives)  # (a, p)
    anchors, positives = grid + ops.expand_dims(index, 1), grid + ops.expand_dims(index, 0)
    return MinedTriplets(anchors, positives, negatives, valid)


#: The miners that run inside the graph, by name.
BATCH_MINERS: dict[str, BatchMiner] = {"batch_hard": batch_hard, "batch_semi_hard": batch_semi_hard}
#: Every mining strategy: the paper's ``random`` triplets (drawn outside the graph) and the
#: batch miners.
MINING_STRATEGIES = ("random", *BATCH_MINERS)


def mine(strategy: str, labels: Tensor, distances: Tensor) -> MinedTriplets:
    """Run a batch miner by name (a key of :data:`BATCH_MINERS`).

    Raises:
        ValueError: unknown strategy (``random`` triplets are drawn by
            :func:`sample_random_triplets`, outside the graph).
    """
    try:
        miner = BATCH_MINERS[strategy]
    except KeyError:
        raise ValueError(
            f"unknown batch mining strategy {strategy!r}; expected one of {tuple(BATCH_MINERS)}"
        ) from None
    return miner(labels, distances)


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


def triplets_from_rows(rows: Tensor, dtype: str = "float32") -> MinedTriplets:
    """Explicit (anchor, positive, negative) index rows as triplets, e.g. the random miner's.

    Args:
        rows: int ``(t, 3)`` rows; a row whose positive index is negative is padding (invalid).
        dtype: float dtype of the validity mask.

    Returns:
        ``(t,)`` triplets; padding rows are invalid and their indices clipped into range.
    """
    rows = ops.cast(rows, "int32")
    valid = ops.cast(ops.greater_equal(rows[:, 1], 0), dtype)
    safe = ops.maximum(rows, 0)
    return MinedTriplets(safe[:, 0], safe[:, 1], safe[:, 2], valid)
