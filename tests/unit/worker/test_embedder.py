"""KerasEmbedder on a tiny real export (built-in layers, saved and reloaded as .keras)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from schemas.manifest import MODEL_FILE, ModelManifest, model_version_of
from schemas.preprocessing import PreprocessingSpec
from schemas.vote import VoteSettings
from worker.adapters.keras_embedder import KerasEmbedder, ModelExportError, export_version_on_disk

SIZE, DIM = 16, 8


def write_export(
    directory: Path, *, dim: int = DIM, manifest_dim: int | None = None, seed: int = 0
) -> ModelManifest:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(dim),
            keras.layers.UnitNormalization(),
        ]
    )
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    manifest = ModelManifest(
        model_version=model_version_of(directory / MODEL_FILE),
        backbone="tiny",
        input_size=SIZE,
        embedding_dim=manifest_dim or dim,
        preprocessing=PreprocessingSpec(input_size=SIZE),
        vote=VoteSettings(),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        keras_version=keras.__version__,
    )
    manifest.write(directory)
    return manifest


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("export")
    write_export(directory)
    return directory


@pytest.fixture(scope="module")
def embedder(export: Path) -> KerasEmbedder:
    return KerasEmbedder.from_export(export, batch_sizes=(1, 4, 8))


def photos(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def test_embeddings_are_float32_unit_rows(embedder: KerasEmbedder) -> None:
    out = embedder.embed(photos(3))
    assert (out.shape, out.dtype) == ((3, DIM), np.float32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_a_photo_s_embedding(embedder: KerasEmbedder) -> None:
    batch = photos(5)
    one_by_one = np.concatenate([embedder.embed(batch[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(embedder.embed(batch), one_by_one, atol=1e-5)


def test_batch_longer_than_the_largest_size_is_split(embedder: KerasEmbedder) -> None:
    batch = photos(11)
    np.testing.assert_allclose(embedder.embed(batch)[8:], embedder.embed(batch[8:]), atol=1e-5)


def test_versions_come_from_the_manifest(embedder: KerasEmbedder, export: Path) -> None:
    manifest = ModelManifest.read(export)
    assert (embedder.model_version, embedder.embedding_dim) == (manifest.model_version, DIM)


def test_wrong_dtype_is_rejected(embedder: KerasEmbedder) -> None:
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(photos(2).astype(np.float32))


def test_wrong_size_is_rejected(embedder: KerasEmbedder) -> None:
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((1, SIZE + 1, SIZE + 1, 3), np.uint8))


def test_modified_model_file_is_refused(tmp_path: Path) -> None:
    write_export(tmp_path)
    manifest = ModelManifest.read(tmp_path)
    other = tmp_path / "other"
    write_export(other, seed=1)
    (tmp_path / MODEL_FILE).write_bytes((other / MODEL_FILE).read_bytes())
    with pytest.raises(ModelExportError, match=manifest.model_version):
        KerasEmbedder.from_export(tmp_path)


def test_dimension_disagreeing_with_the_manifest_is_refused(tmp_path: Path) -> None:
    write_export(tmp_path, dim=DIM, manifest_dim=DIM * 2)
    with pytest.raises(ModelExportError, match="outputs shape"):
        KerasEmbedder.from_export(tmp_path)


def test_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelExportError, match=MODEL_FILE):
        KerasEmbedder.from_export(tmp_path)


def test_version_on_disk_is_read_from_the_manifest(export: Path, tmp_path: Path) -> None:
    assert export_version_on_disk(export) == ModelManifest.read(export).model_version
    assert export_version_on_disk(tmp_path) is None
