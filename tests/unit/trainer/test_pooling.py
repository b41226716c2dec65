"""GeM pooling: the generalised mean with a learned p, an option measured with the protocol."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tests.unit.trainer.test_training import SIZE, tiny_stages
from trainer.model.embedding import EmbeddingModelConfig, parts_from_stages
from trainer.model.pooling import GeneralizedMeanPooling


def _activations() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.0, 6.0, size=(2, 3, 3, 4)).astype(np.float32)


def test_p_one_is_average_pooling_and_a_large_p_tends_to_max_pooling() -> None:
    x = _activations()
    average = GeneralizedMeanPooling(p=1.0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(average(x)), x.mean(axis=(1, 2)), rtol=1e-5
    )
    sharp = keras.ops.convert_to_numpy(GeneralizedMeanPooling(p=60.0)(x))
    np.testing.assert_allclose(sharp, x.max(axis=(1, 2)), rtol=0.05)


def test_p_is_a_trainable_weight_and_survives_saving(tmp_path) -> None:
    layer = GeneralizedMeanPooling(p=3.0)
    model = keras.Sequential([keras.Input((3, 3, 4)), layer])
    assert [w.name for w in layer.trainable_weights] == ["p"]
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.train_on_batch(_activations(), np.zeros((2, 4), np.float32))
    assert float(keras.ops.convert_to_numpy(layer.p)) != pytest.approx(3.0)
    model.save(tmp_path / "gem.keras")
    loaded = keras.saving.load_model(tmp_path / "gem.keras")
    np.testing.assert_allclose(
        loaded.predict(_activations(), verbose=0),
        model.predict(_activations(), verbose=0),
        rtol=1e-6,
    )


def test_the_embedding_head_pools_as_configured() -> None:
    gem = parts_from_stages(
        tiny_stages(), EmbeddingModelConfig("tiny", SIZE, None, "block_1", pooling="gem")
    )
    assert isinstance(gem.trainable.get_layer("pool"), GeneralizedMeanPooling)
    with pytest.raises(ValueError, match="unknown pooling"):
        parts_from_stages(
            tiny_stages(), EmbeddingModelConfig("tiny", SIZE, None, "block_1", pooling="max")
        )


def test_landmark_train_refuses_an_export_the_worker_could_not_load(capsys) -> None:
    from trainer.cli.train import main

    assert main(["--data", "/nonexistent", "--output", "/tmp/x", "--pooling", "gem"]) == 2
    assert "is for measuring with the protocol" in capsys.readouterr().err
