"""Export: model.keras + manifest.json, version = content hash, same embeddings after loading."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from schemas.manifest import MODEL_FILE, model_version_of
from schemas.preprocessing import PreprocessingSpec
from trainer.metric_learning.losses import TripletLoss
from trainer.model.embedding import EmbeddingModelConfig, assemble, embed_photos, parts_from_stages
from trainer.model.export import export_model, load_export

SIZE = 16


def _trained_model() -> keras.Model:
    """A small embedding model after one training step of its trainable part."""
    stages = []
    for index, (name, filters, channels, side) in enumerate(
        (("stem", 4, 3, SIZE), ("block_1", 6, 4, SIZE // 2))
    ):
        inputs = keras.Input((side, side, channels))
        x = keras.layers.Rescaling(1 / 255.0)(inputs) if index == 0 else inputs
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        stages.append(keras.Model(inputs, keras.layers.ReLU()(x), name=name))
    parts = parts_from_stages(stages, EmbeddingModelConfig("tiny", SIZE, 5, "block_1"))
    parts.trainable.compile(optimizer=keras.optimizers.Adam(1e-2), loss=TripletLoss("batch_hard"))
    x = np.random.default_rng(0).normal(size=(4, SIZE // 2, SIZE // 2, 4)).astype(np.float32)
    parts.trainable.train_on_batch(x, np.array([0, 0, 1, 1]))
    return assemble(parts)


def _photos() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(3, SIZE, SIZE, 3)).astype(np.uint8)


def test_loaded_export_gives_the_same_embeddings(tmp_path):
    model = _trained_model()
    export_model(model, backbone="tiny", out_dir=tmp_path)
    loaded, _ = load_export(tmp_path)
    np.testing.assert_allclose(
        embed_photos(loaded, _photos()), embed_photos(model, _photos()), atol=1e-6
    )


def test_manifest_carries_content_hash_and_model_shape(tmp_path):
    manifest = export_model(
        _trained_model(),
        backbone="tiny",
        out_dir=tmp_path,
        training={"epochs_run": 1, "loss": float("nan")},
    )
    assert manifest.model_version == model_version_of(tmp_path / MODEL_FILE)
    assert (manifest.input_size, manifest.embedding_dim) == (SIZE, 5)
    assert manifest.training == {"epochs_run": 1, "loss": None}


def test_load_export_rejects_a_modified_model_file(tmp_path):
    export_model(_trained_model(), backbone="tiny", out_dir=tmp_path)
    with (tmp_path / MODEL_FILE).open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ValueError, match="was modified"):
        load_export(tmp_path)


def test_export_rejects_preprocessing_of_another_size(tmp_path):
    with pytest.raises(ValueError, match="input size"):
        export_model(
            _trained_model(),
            backbone="tiny",
            out_dir=tmp_path,
            preprocessing=PreprocessingSpec(input_size=SIZE * 2),
        )


def test_load_export_of_a_folder_without_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model export"):
        load_export(tmp_path)


def test_export_loads_in_a_process_that_never_imports_trainer(tmp_path):
    """The worker loads exports with plain Keras: no training state (loss classes) in the file."""
    import subprocess
    import sys

    export_model(_trained_model(), backbone="tiny", out_dir=tmp_path)
    script = (
        "import sys, keras\n"
        f"m = keras.saving.load_model({str(tmp_path / MODEL_FILE)!r}, compile=False)\n"
        "assert not any(name.startswith('trainer') for name in sys.modules), 'trainer imported'\n"
        "print(m.output_shape[-1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "5"
