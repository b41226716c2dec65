"""Distances between the embeddings of a batch, and their look-up for index triplets.

The paper's distance is the squared Euclidean distance between unit embeddings. A distance here is
a function of the ``(n, d)`` embeddings returning the ``(n, n)`` matrix; miners pick triplets from
that matrix and losses read the triplets' distances back from it with :func:`triplet_distances`.
Graph code uses ``keras.ops`` only, so it runs on TensorFlow and JAX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras import ops

Tensor = Any
DistanceFn = Callable[[Tensor], Tensor]
"""Maps ``(n, d)`` embeddings to the ``(n, n)`` matrix of their pairwise distances."""

__all__ = ["DistanceFn", "pairwise_squared_l2", "triplet_distances"]


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


def triplet_distances(
    distances: Tensor, anchors: Tensor, positives: Tensor, negatives: Tensor
) -> tuple[Tensor, Tensor]:
    """The anchor-positive and anchor-negative distances of index triplets.

    Args:
        distances: ``(n, n)`` pairwise distances of the batch.
        anchors: int indices into the batch (any shape).
        positives: int indices, the shape of ``anchors``.
        negatives: int indices, the shape of ``anchors``.

    Returns:
        ``(d(anchor, positive), d(anchor, negative))``, each the shape of ``anchors``.
    """
    n = ops.shape(distances)[0]
    flat = ops.reshape(distances, (-1,))
    anchors = ops.cast(anchors, "int32")
    d_ap = ops.take(flat, anchors * n + ops.cast(positives, "int32"))
    d_an = ops.take(flat, anchors * n + ops.cast(negatives, "int32"))
    return d_ap, d_an
