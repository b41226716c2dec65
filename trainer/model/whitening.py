"""Learned whitening of the embeddings (Mikolajczyk & Matas; Radenović et al.'s "Lw").

Plain PCA-whitening of landmark descriptors helps retrieval of landmarks unlike the training data
but flattens exactly the directions that separate the training landmarks. The learned whitening
uses the labels instead: it whitens the *intra-landmark* scatter (differences between photos of
the same landmark: viewpoint, light, season) and then rotates onto the principal directions of
the *whole* data in that space, keeping ``dim`` of them. Directions in which photos of one
landmark vary are shrunk; directions in which landmarks differ are kept.

The fit is a pure numpy function of embeddings and labels (:func:`fit_learned_whitening`); the
result is an affine map that :func:`with_whitening` appends to the exported model as a built-in
``Dense`` layer plus ``UnitNormalization``, so the worker and the gallery loader need nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Whitening:
    """An affine map ``x -> (x - mean) @ projection`` followed by L2 normalisation.

    Attributes:
        mean: ``(d_in,)`` the training embeddings' mean.
        projection: ``(d_in, d_out)``.
    """

    mean: np.ndarray
    projection: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.projection.shape[1])

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """Whiten and re-normalise ``(n, d_in)`` embeddings (numpy; the model does the same)."""
        out = (np.asarray(embeddings, np.float64) - self.mean) @ self.projection
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def fit_learned_whitening(
    embeddings: np.ndarray,
    labels: Sequence[str],
    dim: int | None = None,
    shrinkage: float = 0.1,
) -> Whitening:
    """Fit the learned whitening on labelled training embeddings.

    Args:
        embeddings: ``(n, d)`` training embeddings (any scale; unit rows in practice).
        labels: The landmark of each row; at least two landmarks with two photos each.
        dim: Output dimension (default ``d``); at most ``d``.
        shrinkage: Ridge added to the intra-landmark covariance, as a share of its mean
            eigenvalue: 0 whitens fully, larger values whiten less (and are stabler with few
            photos).

    Returns:
        The whitening.

    Raises:
        ValueError: too few labelled pairs, mismatched lengths, or a bad ``dim``/``shrinkage``.
    """
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"{len(labels)} labels for embeddings of shape {x.shape}")
    d = x.shape[1]
    dim = d if dim is None else dim
    if not 1 <= dim <= d:
        raise ValueError(f"whitening dim must be in 1..{d}, got {dim}")
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
    intra = _intra_landmark_covariance(x, labels)
    ridge = shrinkage * float(np.trace(intra)) / d
    values, vectors = np.linalg.eigh(intra + ridge * np.eye(d))
    inverse_root = vectors @ np.diag(1.0 / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
    mean = x.mean(axis=0)
    whitened = (x - mean) @ inverse_root
    spread = np.cov(whitened, rowvar=False)
    values, vectors = np.linalg.eigh(spread)
    rotation = vectors[:, np.argsort(values)[::-1][:dim]]
    return Whitening(mean=mean, projection=inverse_root @ rotation)


def _intra_landmark_covariance(x: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Covariance of the deviations of photos from their landmark's mean (pooled)."""
    groups: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    usable = [rows for rows in groups.values() if len(rows) >= 2]
    if len(usable) < 2:
        raise ValueError("learned whitening needs two landmarks with two photos each")
    deviations = np.concatenate([x[rows] - x[rows].mean(axis=0) for rows in usable])
    dof = sum(len(rows) - 1 for rows in usable)
    return (deviations.T @ deviations) / dof


def with_whitening(model: object, whitening: Whitening, name: str | None = None) -> object:
    """``model`` followed by the whitening as built-in Keras layers (Dense + UnitNormalization).

    Args:
        model: A Keras model whose output is the embedding the whitening was fitted on.
        whitening: The fitted whitening.
        name: The new model's name (default: the model's).

    Returns:
        A Keras model with the same input and the whitened, unit-length output.
    """
    import keras

    dense = keras.layers.Dense(whitening.dim, name="whitening")
    normalise = keras.layers.UnitNormalization(name="whitened_l2_normalise")
    input_shape = model.input_shape[1:]  # type: ignore[attr-defined]
    if isinstance(model, keras.Sequential):
        # The same flat structure as the model itself (frozen part, trainable part, then these
        # layers), so the export's inference copy drops every sub-model's training state.
        whitened = keras.Sequential(
            [keras.Input(input_shape, name="photo"), *model.layers, dense, normalise],
            name=name or model.name,
        )
    else:
        inputs = keras.Input(input_shape, name="photo")
        outputs = normalise(dense(model(inputs)))  # type: ignore[operator]
        whitened = keras.Model(inputs, outputs, name=name or model.name)  # type: ignore[attr-defined]
    kernel = whitening.projection.astype(np.float32)
    bias = (-whitening.mean @ whitening.projection).astype(np.float32)
    dense.set_weights([kernel, bias])
    return whitened
