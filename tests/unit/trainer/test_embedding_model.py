"""The embedding model: frozen/trainable split, BatchNorm in inference mode, unit outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainer.model.embedding import (
    EmbeddingModelConfig,
    assemble,
    embed_photos,
    parts_from_stages,
)

SIZE = 16


def tiny_stages() -> list[keras.Model]:
    """Three small named stages built like the backbones' (functional models of built-in layers)."""
    stages = []
    channels, side = 3, SIZE
    for index, (name, filters) in enumerate((("stem", 4), ("block_1", 6), ("head_conv", 8))):
        inputs = keras.Input((side, side, channels))
        x = keras.layers.Rescaling(1 / 255.0)(inputs) if index == 0 else inputs
        x = keras.layers.Conv2D(
            filters,
            3,
            strides=2 if index else 1,
            padding="same",
            kernel_initializer=keras.initializers.GlorotUniform(seed=index),
        )(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        stages.append(keras.Model(inputs, x, name=name))
        channels, side = filters, side // 2 if index else side
    return stages


def _photos(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, SIZE, SIZE, 3)).astype(np.uint8)


def test_stages_before_trainable_from_are_frozen():
    parts = parts_from_stages(tiny_stages(), EmbeddingModelConfig("tiny", SIZE, None, "block_1"))
    assert [layer.name for layer in parts.frozen.layers] == ["stem"]
    assert parts.frozen.trainable_weights == []
    assert [layer.name for layer in parts.trainable.layers][:2] == ["block_1", "head_conv"]
    assert parts.trainable.trainable_weights


def test_trainable_from_none_freezes_the_whole_backbone():
    parts = parts_from_stages(tiny_stages(), EmbeddingModelConfig("tiny", SIZE, 5, None))
    assert len(parts.frozen.layers) == 3
    names = [w.path.split("/", 1)[1] for w in parts.trainable.trainable_weights]
    assert names == ["projection/kernel", "projection/bias"]


def test_batch_norm_in_trainable_part_runs_in_inference_mode():
    parts = parts_from_stages(tiny_stages(), EmbeddingModelConfig("tiny", SIZE, None, "stem"))
    x = _photos().astype(np.float32)
    trained_mode = keras.ops.convert_to_numpy(parts.trainable(parts.frozen(x), training=True))
    inference = keras.ops.convert_to_numpy(parts.trainable(parts.frozen(x), training=False))
    np.testing.assert_allclose(trained_mode, inference, atol=1e-6)


def test_assembled_model_outputs_unit_rows_of_embedding_dim():
    parts = parts_from_stages(tiny_stages(), EmbeddingModelConfig("tiny", SIZE, 7, "block_1"))
    out = embed_photos(assemble(parts), _photos())
    assert out.shape == (3, 7)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_assembled_model_equals_frozen_then_trainable():
    parts = parts_from_stages(tiny_stages(), EmbeddingModelConfig("tiny", SIZE, None, "block_1"))
    x = _photos().astype(np.float32)
    two_step = keras.ops.convert_to_numpy(parts.trainable(parts.frozen(x)))
    np.testing.assert_allclose(embed_photos(assemble(parts), x), two_step, atol=1e-6)


def test_unknown_trainable_from_is_rejected_with_stage_names():
    with pytest.raises(ValueError, match=r"block_99.*stem"):
        parts_from_stages(tiny_stages(), EmbeddingModelConfig("tiny", SIZE, None, "block_99"))
