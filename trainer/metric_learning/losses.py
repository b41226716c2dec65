"""The paper's triplet loss: pure functions of (labels, embeddings) plus a serialisable Keras wrapper.

    loss(a, p, n) = max(d(a, p) - d(a, n) + alpha, 0)

with d the squared Euclidean distance between unit embeddings by default (the paper's best margin
was alpha = 0.1). The pieces compose as in pytorch-metric-learning: a distance
(:mod:`trainer.metric_learning.distances`) gives the batch's distance matrix, a miner
(:mod:`trainer.metric_learning.miners`) picks index triplets from it, the hinge turns their
distances into per-triplet values and a reducer averages them. Everything here uses ``keras.ops``
only.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from trainer.metric_learning.distances import DistanceFn, pairwise_squared_l2, triplet_distances
from trainer.metric_learning.miners import (
    MINING_STRATEGIES,
    MinedTriplets,
    mine,
    sample_random_triplets,
    triplets_from_rows,
)

Tensor = Any
DEFAULT_MARGIN = 0.1
REDUCERS = ("mean_active", "mean")


def triplet_hinge(d_ap: Tensor, d_an: Tensor, margin: float = DEFAULT_MARGIN) -> Tensor:
    """Element-wise hinge ``max(d_ap - d_an + margin, 0)`` on precomputed distances."""
    return ops.relu(d_ap - d_an + margin)


def reduce_triplets(values: Tensor, valid: Tensor, reducer: str = "mean_active") -> Tensor:
    """Average per-triplet loss values.

    Args:
        values: per-triplet hinge values (any shape).
        valid: float mask of the same shape; 1 where the triplet exists.
        reducer: ``"mean_active"`` averages over triplets with a non-zero loss (so easy triplets
            do not dilute the gradient as training progresses), ``"mean"`` over all valid ones.

    Returns:
        Scalar loss; 0 when there is nothing to average.

    Raises:
        ValueError: unknown reducer.
    """
    values = values * valid
    if reducer == "mean_active":
        count = ops.sum(ops.cast(ops.greater(values, 0.0), values.dtype) * valid)
    elif reducer == "mean":
        count = ops.sum(valid)
    else:
        raise ValueError(f"unknown reducer {reducer!r}; expected one of {REDUCERS}")
    return ops.sum(values) / ops.maximum(count, 1.0)


def triplet_loss(
    anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = DEFAULT_MARGIN
) -> Tensor:
    """Per-triplet loss for rows of anchor, positive and negative embeddings ``(t, d)``."""
    d_ap = ops.sum(ops.square(anchor - positive), axis=-1)
    d_an = ops.sum(ops.square(anchor - negative), axis=-1)
    return triplet_hinge(d_ap, d_an, margin)


def margin_loss(
    distances: Tensor,
    triplets: MinedTriplets,
    margin: float = DEFAULT_MARGIN,
    reducer: str = "mean_active",
) -> Tensor:
    """Reduced hinge loss of mined triplets, their distances read from the batch's matrix.

    Args:
        distances: ``(n, n)`` pairwise distances of the batch.
        triplets: index triplets into the batch with their validity mask.
        margin: alpha.
        reducer: see :func:`reduce_triplets`.
    """
    d_ap, d_an = triplet_distances(
        distances, triplets.anchors, triplets.positives, triplets.negatives
    )
    return reduce_triplets(triplet_hinge(d_ap, d_an, margin), triplets.valid, reducer)


def random_triplet_loss(
    embeddings: Tensor,
    triplets: Tensor,
    margin: float = DEFAULT_MARGIN,
    reducer: str = "mean",
    distance: DistanceFn = pairwise_squared_l2,
) -> Tensor:
    """Loss over explicit (anchor, positive, negative) index triplets, e.g. the paper's random ones.

    Args:
        embeddings: ``(n, d)`` embeddings of the batch.
        triplets: int ``(t, 3)`` indices into the batch; rows with a negative positive index are
            ignored (padding).
        margin: alpha.
        reducer: see :func:`reduce_triplets`.
        distance: pairwise distance function (squared L2 as in the paper).
    """
    embeddings = ops.convert_to_tensor(embeddings)
    mined = triplets_from_rows(triplets, embeddings.dtype)
    return margin_loss(distance(embeddings), mined, margin, reducer)


def mined_triplet_loss(
    labels: Tensor,
    embeddings: Tensor,
    strategy: str = "batch_hard",
    margin: float = DEFAULT_MARGIN,
    reducer: str = "mean_active",
    distance: DistanceFn = pairwise_squared_l2,
) -> Tensor:
    """Triplet loss over the triplets a batch miner picks (``batch_hard`` or ``batch_semi_hard``).

    Args:
        labels: int ``(n,)`` labels of a P x K batch.
        embeddings: ``(n, d)`` embeddings.
        strategy: the miner, a key of :data:`trainer.metric_learning.miners.BATCH_MINERS`.
        margin: alpha.
        reducer: see :func:`reduce_triplets`.
        distance: pairwise distance function (squared L2 as in the paper).
    """
    distances = distance(embeddings)
    return margin_loss(distances, mine(strategy, labels, distances), margin, reducer)


def random_triplet_targets(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Targets for :class:`TripletLoss` with ``mining="random"``: rows (label, positive, negative).

    Each row's anchor is the row itself; positive/negative are -1 when the batch has none.
    """
    labels = np.asarray(labels)
    targets = np.full((len(labels), 3), -1, dtype=np.int32)
    targets[:, 0] = labels
    for anchor, positive, negative in sample_random_triplets(labels, rng):
        targets[anchor, 1:] = (positive, negative)
    return targets


@keras.saving.register_keras_serializable(package="landmark")
class TripletLoss(keras.losses.Loss):
    """Keras wrapper around the pure triplet losses.

    ``y_true`` is the batch's integer labels ``(n,)`` for the batch miners; for ``mining="random"``
    it is ``(n, 3)`` rows (label, positive index, negative index) made by
    :func:`random_triplet_targets` outside the graph, so the random draw is seeded and
    backend-independent.
    """

    def __init__(
        self,
        mining: str = "batch_hard",
        margin: float = DEFAULT_MARGIN,
        reducer: str | None = None,
        name: str = "triplet_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if mining not in MINING_STRATEGIES:
            raise ValueError(f"unknown mining {mining!r}; expected one of {MINING_STRATEGIES}")
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        default_reducer = "mean" if mining == "random" else "mean_active"
        self.mining = mining
        self.margin = float(margin)
        self.reducer = reducer or default_reducer
        if self.reducer not in REDUCERS:
            raise ValueError(f"unknown reducer {self.reducer!r}; expected one of {REDUCERS}")

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true = ops.cast(y_true, "int32")
        if self.mining == "random":
            rows = ops.reshape(y_true, (-1, 3))
            anchors = ops.expand_dims(ops.arange(ops.shape(rows)[0], dtype="int32"), 1)
            triplets = ops.concatenate([anchors, rows[:, 1:]], axis=1)
            return random_triplet_loss(y_pred, triplets, self.margin, self.reducer)
        labels = ops.reshape(y_true, (ops.shape(y_pred)[0], -1))[:, 0]
        return mined_triplet_loss(labels, y_pred, self.mining, self.margin, self.reducer)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"mining": self.mining, "margin": self.margin, "reducer": self.reducer})
        return config
