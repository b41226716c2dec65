"""Training on cached activations: same network as end to end, reproducible views, checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from schemas.preprocessing import PreprocessingSpec
from trainer.data.augmentation import augmented_view, view_rng
from trainer.data.loading import load_photos
from trainer.data.photos import Photo, group_by_landmark, read_landmark_folders
from trainer.model.embedding import EmbeddingModelConfig, assemble, embed_photos, parts_from_stages
from trainer.training.activation_cache import ActivationCacheSettings, cached_activations
from trainer.training.fine_tune import fine_tune
from trainer.training.run import TrainingSettings

SIZE = 32
REPO = Path(__file__).resolve().parents[3]
DATA_DIR = Path(os.environ.get("LANDMARK_DATA_DIR", REPO.parent / "shared/data/landmarks"))


def tiny_stages() -> list[keras.Model]:
    stages, channels, side = [], 3, SIZE
    for index, (name, filters) in enumerate((("stem", 4), ("block_1", 6), ("head_conv", 8))):
        inputs = keras.Input((side, side, channels))
        x = keras.layers.Rescaling(1 / 255.0)(inputs) if index == 0 else inputs
        x = keras.layers.Conv2D(
            filters,
            3,
            strides=2,
            padding="same",
            kernel_initializer=keras.initializers.GlorotUniform(seed=index),
        )(x)
        x = keras.layers.BatchNormalization()(x)
        stages.append(keras.Model(inputs, keras.layers.ReLU()(x), name=name))
        channels, side = filters, side // 2
    return stages


def _photo_folder(root: Path, landmarks: int = 4, per_landmark: int = 4) -> list[Photo]:
    """Small JPEGs whose colour depends on the landmark, written into landmark folders."""
    rng = np.random.default_rng(0)
    for landmark in range(landmarks):
        folder = root / f"landmark_{landmark}"
        folder.mkdir(parents=True)
        for index in range(per_landmark):
            base = np.array([60 * landmark % 256, 40, 255 - 50 * landmark], np.float32)
            pixels = np.clip(base + rng.normal(0, 30, size=(48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=95)
    return read_landmark_folders(root)


def _settings(tmp_path: Path, epochs: int, views: int = 1) -> TrainingSettings:
    return TrainingSettings(
        model=EmbeddingModelConfig("tiny", SIZE, 4, "block_1"),
        output_dir=tmp_path / "run",
        cache=ActivationCacheSettings(cache_dir=tmp_path / "cache", augmented_views=views),
        p=2,
        k=2,
        epochs=epochs,
        learning_rate=1e-2,
        patience=5,
    )


def test_cached_activation_through_trainable_part_equals_assembled_model(tmp_path):
    """Real MobileNetV2 weights, real photos, float16 cache: embeddings agree within 1e-3."""
    from trainer.model.embedding import build_embedding_model

    if not DATA_DIR.is_dir():
        pytest.skip(f"landmark photos not found at {DATA_DIR} (set LANDMARK_DATA_DIR)")
    paths = [p.path for p in read_landmark_folders(DATA_DIR)[:4]]
    config = EmbeddingModelConfig("mobilenet_v2", 96, None, "block_15")
    parts = build_embedding_model(config, "imagenet", cache_dir=REPO / ".cache" / "weights")
    cache = ActivationCacheSettings(cache_dir=tmp_path, augmented_views=0, dtype="float16")
    acts = cached_activations(parts.frozen, paths, 96, cache, {"test": 1})
    from_cache = keras.ops.convert_to_numpy(parts.trainable(np.asarray(acts[:, 0], np.float32)))
    photos = load_photos(paths, PreprocessingSpec(input_size=96)).images
    end_to_end = embed_photos(assemble(parts), photos)
    np.testing.assert_allclose(from_cache, end_to_end, atol=1e-3)


def test_augmented_view_is_a_function_of_seed_photo_and_view():
    photo = np.random.default_rng(1).integers(0, 256, size=(40, 50, 3)).astype(np.uint8)
    first = augmented_view(photo, 32, view_rng(3, "a/1.jpg", 1))
    again = augmented_view(photo, 32, view_rng(3, "a/1.jpg", 1))
    other = augmented_view(photo, 32, view_rng(3, "a/1.jpg", 2))
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_activation_cache_is_reused_for_the_same_inputs(tmp_path):
    photos = _photo_folder(tmp_path / "photos", landmarks=2, per_landmark=2)
    parts = parts_from_stages(tiny_stages(), EmbeddingModelConfig("tiny", SIZE, None, "block_1"))
    cache = ActivationCacheSettings(cache_dir=tmp_path / "cache", augmented_views=2)
    first = cached_activations(parts.frozen, [p.path for p in photos], SIZE, cache, {})
    second = cached_activations(parts.frozen, [p.path for p in photos], SIZE, cache, {})
    assert first.shape == (4, 3, 16, 16, 4)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    np.testing.assert_array_equal(first, second)


def test_fine_tune_changes_only_the_trainable_part(tmp_path):
    photos = _photo_folder(tmp_path / "photos")
    parts = parts_from_stages(tiny_stages(), EmbeddingModelConfig("tiny", SIZE, 4, "block_1"))
    frozen_before = [w.copy() for w in parts.frozen.get_weights()]
    trainable_before = [w.copy() for w in parts.trainable.get_weights()]
    result = fine_tune(parts, photos, [], _settings(tmp_path, epochs=1), log=lambda _: None)
    for before, after in zip(frozen_before, result.parts.frozen.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    changed = [
        not np.allclose(b, a)
        for b, a in zip(trainable_before, result.parts.trainable.get_weights(), strict=True)
    ]
    assert any(changed)


def test_resume_continues_after_the_last_checkpoint(tmp_path):
    photos = _photo_folder(tmp_path / "photos")
    val = photos[::4]
    train = [p for p in photos if p not in val]
    stages = tiny_stages()
    config = EmbeddingModelConfig("tiny", SIZE, 4, "block_1")
    fine_tune(
        parts_from_stages(stages, config), train, val, _settings(tmp_path, 1), log=lambda _: None
    )
    lines: list[str] = []
    result = fine_tune(
        parts_from_stages(stages, config), train, val, _settings(tmp_path, 2), lines.append
    )
    assert any(line.startswith("resumed from") for line in lines)
    assert [h["epoch"] for h in result.summary.history] == [1, 2]
    assert result.summary.epochs_run == 2
    assert (tmp_path / "run" / "checkpoints" / "last.keras").exists()


def test_calibrated_vote_reaches_its_precision_on_the_split_and_keeps_the_rule(tmp_path):
    """The exported decision rule gets the threshold calibrated on the split's queries."""
    from schemas.vote import VoteSettings
    from trainer.training.split_evaluation import calibrated_vote

    photos = _photo_folder(tmp_path / "photos", landmarks=5, per_landmark=4)
    by_landmark = group_by_landmark(photos)
    split = {
        "reference": [group[0] for group in by_landmark.values()],
        "query": [p for group in by_landmark.values() for p in group[1:]],
    }
    settings = _settings(tmp_path, epochs=1)
    parts = parts_from_stages(tiny_stages(), settings.model)
    rule = VoteSettings(k=3, rule="margin", threshold=0.5)
    vote, calibration = calibrated_vote(parts, split, settings, rule, target_precision=0.9)
    # Every query among all references, and the 3 queries of the one landmark (20% of 5) whose
    # references calibration removes once more, as open-set photos.
    assert calibration is not None and calibration.queries == len(split["query"]) + 3
    assert vote.rule == "margin" and vote.k == 3
    assert vote.threshold == calibration.threshold
    assert calibration.precision is None or calibration.precision >= 0.9


def test_calibration_needs_queries_and_two_landmarks(tmp_path):
    from schemas.vote import VoteSettings
    from trainer.training.split_evaluation import calibrated_vote

    settings = _settings(tmp_path, epochs=1)
    parts = parts_from_stages(tiny_stages(), settings.model)
    rule = VoteSettings()
    assert calibrated_vote(parts, {"reference": [], "query": []}, settings, rule) == (rule, None)


@pytest.mark.slow
def test_pipeline_exports_the_whitened_model_with_its_calibrated_rule(tmp_path):
    """Fine-tune, whiten, calibrate, export: the export embeds like the evaluated network."""
    from schemas.manifest import ModelManifest
    from trainer.model.export import load_export
    from trainer.training.pipeline import train_evaluate_export
    from trainer.training.run import WhiteningSettings

    photos = _photo_folder(tmp_path / "photos", landmarks=5, per_landmark=6)
    by_landmark = group_by_landmark(photos)
    split = {
        "train": [p for group in by_landmark.values() for p in group[:3]],
        "reference": [group[3] for group in by_landmark.values()],
        "query": [p for group in by_landmark.values() for p in group[4:]],
    }
    settings = TrainingSettings(
        model=EmbeddingModelConfig("mobilenet_v2", 32, None, "block_16"),
        output_dir=tmp_path / "run",
        cache=ActivationCacheSettings(cache_dir=tmp_path / "cache", augmented_views=0),
        p=2,
        k=2,
        epochs=1,
        whitening=WhiteningSettings(dim=8, shrinkage=0.5),
    )
    report = train_evaluate_export(split, settings, REPO / ".cache" / "weights")
    model, manifest = load_export(tmp_path / "run" / "model")
    assert isinstance(manifest, ModelManifest)
    assert manifest.embedding_dim == 8 and model.output_shape[-1] == 8
    assert manifest.vote.rule == "margin"
    assert manifest.vote.threshold == report["evaluation"]["vote_calibration"]["threshold"]
    assert report["training"]["whitening"] == {"dim": 8, "shrinkage": 0.5}
    # The worker and the gallery loader load it with plain Keras, without the trainer's loss.
    code = (
        "import sys, keras; m = keras.saving.load_model(sys.argv[1]); "
        "print(m.output_shape[-1], 'trainer.metric_learning.losses' in sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run" / "model" / "model.keras")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[-2:] == ["8", "False"]
