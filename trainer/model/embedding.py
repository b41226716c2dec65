"""The embedding network: frozen lower stages, trainable upper stages, pooling, projection, L2 norm.

The backbone comes as an ordered list of named stages (:func:`trainer.backbones.build_stages`).
Stages before ``trainable_from`` form the *frozen* part; the rest, followed by global average
pooling, an optional ``Dense`` projection and ``UnitNormalization``, form the *trainable* part.
Keeping the two apart lets training run the frozen part once per photo and view
(:mod:`trainer.training.activation_cache`) and fit only the trainable part; :func:`assemble` then
glues them back into one model that takes float32 RGB 0..255 photos, exactly the network trained.

BatchNormalization layers in the trainable part stay in inference mode (``trainable=False``):
the standard choice when fine-tuning with small batches, whose statistics would be too noisy to
replace ImageNet's. Only built-in Keras layers are used, so a saved model loads without custom
objects on TensorFlow or JAX.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras


@dataclass(frozen=True)
class EmbeddingModelConfig:
    """What network to build.

    Attributes:
        backbone: a name in :data:`trainer.backbones.BACKBONES`.
        input_size: side of the square input photo.
        embedding_dim: size of a ``Dense`` projection after pooling; ``None`` keeps the
            backbone's pooled features.
        trainable_from: first trainable stage name (e.g. ``"block_15"``); ``None`` freezes the
            whole backbone (only the projection, if any, trains).
        seed: seed of the projection's initial weights.
        pooling: ``average`` (built-in global average pooling) or ``gem`` (generalised mean
            with a learned p, :mod:`trainer.model.pooling`; a custom layer in the export).
    """

    backbone: str
    input_size: int
    embedding_dim: int | None = None
    trainable_from: str | None = None
    seed: int = 0
    pooling: str = "average"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EmbeddingParts:
    """The two halves of the embedding model.

    Attributes:
        frozen: photo ``(S, S, 3)`` float32 0..255 → activation of the last frozen stage.
        trainable: that activation → unit-length embedding.
    """

    frozen: keras.Model
    trainable: keras.Model

    @property
    def embedding_dim(self) -> int:
        return int(self.trainable.output_shape[-1])


def build_embedding_model(
    config: EmbeddingModelConfig, weights: str | None = "imagenet", cache_dir: Path | None = None
) -> EmbeddingParts:
    """Build the frozen and trainable parts of the embedding model for a backbone.

    Args:
        config: backbone, input size, projection and first trainable stage.
        weights: ``"imagenet"`` for pretrained weights or ``None`` for random initialisation.
        cache_dir: where converted pretrained weights are cached.

    Returns:
        The two parts; :func:`assemble` makes the whole model.

    Raises:
        ValueError: ``trainable_from`` names no stage of the backbone.
    """
    from trainer.backbones import build_stages

    stages = build_stages(config.backbone, weights, config.input_size, cache_dir=cache_dir)
    return parts_from_stages(stages, config)


def parts_from_stages(
    stages: Sequence[keras.Model], config: EmbeddingModelConfig
) -> EmbeddingParts:
    """Split an ordered list of stage models into the frozen and trainable parts.

    Raises:
        ValueError: ``trainable_from`` names no stage, or the stage list is empty.
    """
    if not stages:
        raise ValueError("the backbone has no stages")
    names = [stage.name for stage in stages]
    if config.trainable_from is None:
        split = len(stages)
    elif config.trainable_from in names:
        split = names.index(config.trainable_from)
    else:
        raise ValueError(
            f"trainable_from={config.trainable_from!r} is not a stage of {config.backbone}; "
            f"stages are {names}"
        )
    size = config.input_size
    # Training from the first stage leaves nothing frozen: an identity keeps the two-part shape.
    lower = list(stages[:split]) or [keras.layers.Identity(name="identity")]
    frozen = keras.Sequential([keras.Input((size, size, 3), name="photo"), *lower], name="frozen")
    frozen.trainable = False
    head: list[keras.layers.Layer] = list(stages[split:])
    if config.pooling == "gem":
        from trainer.model.pooling import GeneralizedMeanPooling

        head.append(GeneralizedMeanPooling(name="pool"))
    elif config.pooling == "average":
        head.append(keras.layers.GlobalAveragePooling2D(name="pool"))
    else:
        raise ValueError(f"unknown pooling {config.pooling!r}; expected average or gem")
    if config.embedding_dim is not None:
        if config.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {config.embedding_dim}")
        head.append(
            keras.layers.Dense(
                config.embedding_dim,
                name="projection",
                kernel_initializer=keras.initializers.GlorotUniform(seed=config.seed),
            )
        )
    head.append(keras.layers.UnitNormalization(name="l2_normalise"))
    activation_shape = tuple(frozen.output_shape[1:])
    trainable = keras.Sequential(
        [keras.Input(activation_shape, name="activation"), *head], name="trainable"
    )
    freeze_batch_norm(trainable)
    return EmbeddingParts(frozen=frozen, trainable=trainable)


def freeze_batch_norm(model: keras.layers.Layer) -> None:
    """Put every BatchNormalization layer inside ``model`` (nested too) in inference mode."""
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _all_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    found = [layer]
    for child in getattr(layer, "layers", []):
        found.extend(_all_layers(child))
    return found


def assemble(parts: EmbeddingParts, name: str = "landmark_embedding") -> keras.Model:
    """The whole embedding model: photo float32 RGB 0..255 ``(n, S, S, 3)`` → unit embeddings."""
    size = parts.frozen.input_shape[1:]
    return keras.Sequential(
        [keras.Input(size, name="photo"), parts.frozen, parts.trainable], name=name
    )


def embed_photos(model: keras.Model, photos: Any, batch_size: int = 64) -> Any:
    """Embed uint8 or float photos ``(n, S, S, 3)`` with a model; returns float32 ``(n, d)``."""
    import numpy as np

    photos = np.asarray(photos)
    out = [
        keras.ops.convert_to_numpy(
            model(np.asarray(photos[i : i + batch_size], np.float32), training=False)
        )
        for i in range(0, len(photos), batch_size)
    ]
    if not out:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.concatenate(out).astype(np.float32)
