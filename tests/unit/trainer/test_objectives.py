"""Sub-center ArcFace, embedding distillation and the training model that carries them."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest

from tests.unit.trainer.test_training import SIZE, _photo_folder, _settings, tiny_stages
from trainer.metric_learning.arcface import (
    ArcFaceLoss,
    EmbeddingDistillation,
    SubCenterCosine,
    arcface_logits,
)
from trainer.model.embedding import EmbeddingModelConfig, parts_from_stages
from trainer.training.fine_tune import fine_tune
from trainer.training.objective import ObjectiveSettings, trainable_of


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_subcenter_cosine_is_the_best_centre_of_each_landmark():
    rng = np.random.default_rng(0)
    head = SubCenterCosine(classes=3, subcenters=2)
    head.build((None, 5))
    centres = _unit(rng.normal(size=(6, 5)))  # landmark c owns rows 2c and 2c + 1
    head.centres.assign(centres.T)
    embeddings = _unit(rng.normal(size=(4, 5)))
    cosines = keras.ops.convert_to_numpy(head(embeddings))
    expected = (embeddings @ centres.T).reshape(4, 3, 2).max(axis=2)
    np.testing.assert_allclose(cosines, expected, atol=1e-5)


def test_arcface_adds_the_angular_margin_to_the_right_landmark_only():
    cosines = np.array([[0.8, 0.3, -0.2]], np.float32)
    logits, _ = arcface_logits(np.array([0]), cosines, scale=10.0, margin=0.3)
    logits = keras.ops.convert_to_numpy(logits)
    assert logits[0, 0] == pytest.approx(10 * math.cos(math.acos(0.8) + 0.3), abs=1e-4)
    np.testing.assert_allclose(logits[0, 1:], [3.0, -2.0], atol=1e-5)


def test_arcface_past_pi_minus_margin_keeps_decreasing():
    """Near -1 the margin's cosine would rise again; the stand-in keeps the logit monotone."""
    cosines = np.array([[-0.99, 0.0], [-0.999, 0.0]], np.float32)
    logits, _ = arcface_logits(np.array([0, 0]), cosines, scale=1.0, margin=0.3)
    logits = keras.ops.convert_to_numpy(logits)
    assert logits[1, 0] < logits[0, 0] < -0.99


def test_arcface_loss_falls_as_the_right_cosine_rises():
    loss = ArcFaceLoss(scale=30.0, margin=0.3)
    far = loss(np.array([1]), np.array([[0.9, 0.1]], np.float32))
    near = loss(np.array([1]), np.array([[0.1, 0.9]], np.float32))
    assert float(near) < float(far)
    with pytest.raises(ValueError, match="margin"):
        ArcFaceLoss(margin=2.0)


def test_distillation_is_the_squared_distance_to_the_pretrained_embedding():
    student = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    teacher = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    assert float(EmbeddingDistillation()(teacher, student)) == pytest.approx(1.0)


def test_objective_settings_refuse_unknown_losses_and_negative_weights():
    with pytest.raises(ValueError, match="unknown loss"):
        ObjectiveSettings(loss="softmax")
    with pytest.raises(ValueError, match="distillation"):
        ObjectiveSettings(distillation=-1.0)


@pytest.mark.parametrize(
    "objective",
    [
        ObjectiveSettings(loss="subcenter_arcface", subcenters=2),
        ObjectiveSettings(loss="triplet", distillation=1.0),
        ObjectiveSettings(loss="subcenter_arcface", distillation=0.5),
    ],
    ids=["arcface", "triplet+distillation", "arcface+distillation"],
)
def test_fine_tune_with_each_objective_trains_resumes_and_exports_the_embedding_alone(
    tmp_path, objective
):
    photos = _photo_folder(tmp_path / "photos", per_landmark=6)
    val = photos[::3]  # two a landmark: the validation loss runs too
    train = [p for p in photos if p not in val]
    config = EmbeddingModelConfig("tiny", SIZE, 4, "block_1")
    settings = dataclasses.replace(_settings(tmp_path, 1), objective=objective)
    parts = parts_from_stages(tiny_stages(), config)
    before = [w.copy() for w in parts.trainable.get_weights()]
    fine_tune(parts, train, val, settings, log=lambda _: None)
    lines: list[str] = []
    result = fine_tune(
        parts_from_stages(tiny_stages(), config),
        train,
        val,
        dataclasses.replace(settings, epochs=2),
        lines.append,
    )
    assert any(line.startswith("resumed from") for line in lines)
    assert [h["epoch"] for h in result.summary.history] == [1, 2]
    for epoch in result.summary.history:
        assert np.isfinite(epoch["loss"])
        assert epoch["val_loss"] is not None
        assert np.isfinite(epoch["val_loss"])
    assert result.summary.loss == objective.loss
    assert result.summary.distillation == objective.distillation
    trainable = result.parts.trainable
    assert [layer.name for layer in trainable.layers][-1] == "l2_normalise"
    assert not any(isinstance(layer, SubCenterCosine) for layer in trainable.layers)
    # The kept weights are the best epoch's (maybe the pretrained ones); the last epoch's moved.
    last = trainable_of(keras.saving.load_model(tmp_path / "run/checkpoints/last.keras"))
    assert any(not np.allclose(b, a) for b, a in zip(before, last.get_weights(), strict=True))


def test_resume_refuses_a_checkpoint_of_another_loss(tmp_path):
    photos = _photo_folder(tmp_path / "photos")
    config = EmbeddingModelConfig("tiny", SIZE, 4, "block_1")
    fine_tune(
        parts_from_stages(tiny_stages(), config),
        photos[1:],
        photos[::4],
        _settings(tmp_path, 1),
        log=lambda _: None,
    )
    other = dataclasses.replace(
        _settings(tmp_path, 2), objective=ObjectiveSettings(loss="subcenter_arcface")
    )
    with pytest.raises(ValueError, match="loss"):
        fine_tune(
            parts_from_stages(tiny_stages(), config),
            photos[1:],
            photos[::4],
            other,
            log=lambda _: None,
        )
