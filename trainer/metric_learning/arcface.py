"""Sub-center ArcFace (Deng et al. 2020), the loss of the Google Landmarks v2 winners, and an
embedding distillation penalty that keeps fine-tuned embeddings near the pretrained network's.

* :class:`SubCenterCosine` is a training-only head: ``K`` unit-length centres per landmark; a
  photo's cosine to a landmark is its largest cosine to one of that landmark's centres, so a
  landmark with several looks (inside, outside, night) is not forced onto one point.
* :class:`ArcFaceLoss` adds the additive angular margin ``m`` to the right landmark's angle and
  takes softmax cross-entropy of the cosines scaled by ``s``.
* :class:`EmbeddingDistillation` is ``mean ||e - e0||^2`` between the embedding being trained
  and the pretrained network's embedding ``e0`` of the same input (a feature-distillation form of
  L2-SP): what fine-tuning learns must not cost the general features that unseen landmarks need.

Only ``keras.ops``: the same code trains on TensorFlow and on JAX. The head never leaves training:
the export holds the embedding network alone.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

Tensor = Any
DEFAULT_SCALE = 30.0
DEFAULT_ANGULAR_MARGIN = 0.3
DEFAULT_SUBCENTERS = 3


@keras.saving.register_keras_serializable(package="landmark")
class SubCenterCosine(keras.layers.Layer):
    """Unit embeddings ``(n, d)`` → cosine to each landmark ``(n, classes)``: the best of its
    ``subcenters`` unit centres."""

    def __init__(self, classes: int, subcenters: int = DEFAULT_SUBCENTERS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if classes < 2:
            raise ValueError(f"sub-center ArcFace needs at least 2 landmarks, got {classes}")
        if subcenters < 1:
            raise ValueError(f"subcenters must be positive, got {subcenters}")
        self.classes = int(classes)
        self.subcenters = int(subcenters)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.centres = self.add_weight(
            shape=(int(input_shape[-1]), self.classes * self.subcenters),
            initializer=keras.initializers.GlorotUniform(seed=0),
            name="centres",
        )

    def call(self, embeddings: Tensor) -> Tensor:
        centres = self.centres / ops.maximum(
            ops.sqrt(ops.sum(ops.square(self.centres), axis=0, keepdims=True)), 1e-12
        )
        cosines = ops.matmul(embeddings, centres)
        cosines = ops.reshape(cosines, (-1, self.classes, self.subcenters))
        return ops.max(cosines, axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, int]:
        return (input_shape[0], self.classes)

    def initial_centres(self, centroids: np.ndarray, seed: int = 0) -> None:
        """Start every landmark's centres at its mean pretrained embedding (plus a little noise
        apart), so the head starts where the embeddings are instead of at random directions."""
        centroids = np.asarray(centroids, np.float32)
        if centroids.shape != (self.classes, self.centres.shape[0]):
            raise ValueError(
                f"centroids of shape {centroids.shape}, expected "
                f"{(self.classes, self.centres.shape[0])}"
            )
        rng = np.random.default_rng(seed)
        centres = np.repeat(centroids, self.subcenters, axis=0)
        centres = centres + rng.normal(0.0, 0.01, centres.shape).astype(np.float32)
        centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
        self.centres.assign(centres.T)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"classes": self.classes, "subcenters": self.subcenters})
        return config


def arcface_logits(
    labels: Tensor, cosines: Tensor, scale: float, margin: float
) -> tuple[Tensor, Tensor]:
    """The scaled logits with the angular margin on each row's right landmark, and the one-hot
    labels. Past ``pi - m`` the margin's cosine would turn back up: there the usual linear
    stand-in ``cos - m sin m``-style penalty (``cos - sin(pi - m) m``) is used."""
    classes = ops.shape(cosines)[-1]
    one_hot = ops.one_hot(ops.cast(labels, "int32"), classes, dtype=cosines.dtype)
    cosines = ops.clip(cosines, -1.0 + 1e-7, 1.0 - 1e-7)
    sines = ops.sqrt(1.0 - ops.square(cosines))
    with_margin = cosines * math.cos(margin) - sines * math.sin(margin)
    fallback = cosines - math.sin(math.pi - margin) * margin
    with_margin = ops.where(cosines > math.cos(math.pi - margin), with_margin, fallback)
    logits = scale * (one_hot * with_margin + (1.0 - one_hot) * cosines)
    return logits, one_hot


@keras.saving.register_keras_serializable(package="landmark")
class ArcFaceLoss(keras.losses.Loss):
    """Softmax cross-entropy of ArcFace logits; ``y_true`` integer labels ``(n,)``, ``y_pred``
    the head's cosines ``(n, classes)``."""

    def __init__(
        self,
        scale: float = DEFAULT_SCALE,
        margin: float = DEFAULT_ANGULAR_MARGIN,
        name: str = "arcface_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if scale <= 0:
            raise ValueError(f"ArcFace scale must be positive, got {scale}")
        if not 0 <= margin < math.pi / 2:
            raise ValueError(f"ArcFace margin must be in [0, pi/2), got {margin}")
        self.scale = float(scale)
        self.margin = float(margin)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        labels = ops.reshape(y_true, (-1,))
        logits, one_hot = arcface_logits(labels, y_pred, self.scale, self.margin)
        return keras.losses.categorical_crossentropy(one_hot, logits, from_logits=True)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"scale": self.scale, "margin": self.margin})
        return config


@keras.saving.register_keras_serializable(package="landmark")
class EmbeddingDistillation(keras.losses.Loss):
    """Squared distance between the trained embedding (``y_pred``) and the pretrained network's
    embedding of the same input (``y_true``), per row."""

    def __init__(self, name: str = "embedding_distillation", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        return ops.sum(ops.square(y_pred - ops.cast(y_true, y_pred.dtype)), axis=-1)
