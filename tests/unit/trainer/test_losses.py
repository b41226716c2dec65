"""Oracle tests for the triplet losses: vectorised values against plain triplet-by-triplet loops."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from trainer.metric_learning.losses import (
    TripletLoss,
    mined_triplet_loss,
    random_triplet_loss,
    random_triplet_targets,
    reduce_triplets,
    triplet_loss,
)
from trainer.metric_learning.miners import sample_random_triplets


def _sq(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum((a - b) ** 2))


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pk_labels(p: int, k: int) -> np.ndarray:
    return np.repeat(np.arange(p), k).astype(np.int32)


def _batch_hard_oracle(labels, emb, margin, active_only):
    values = []
    for a in range(len(labels)):
        pos = [_sq(emb[a], emb[p]) for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [_sq(emb[a], emb[n]) for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            values.append(max(max(pos) - min(neg) + margin, 0.0))
    return _reduce(values, active_only)


def _semi_hard_oracle(labels, emb, margin, active_only):
    values = []
    n_items = len(labels)
    for a, p in itertools.permutations(range(n_items), 2):
        if labels[a] != labels[p]:
            continue
        d_ap = _sq(emb[a], emb[p])
        negs = [_sq(emb[a], emb[n]) for n in range(n_items) if labels[n] != labels[a]]
        if not negs:
            continue
        farther = [d for d in negs if d > d_ap]
        d_an = min(farther) if farther else max(negs)
        values.append(max(d_ap - d_an + margin, 0.0))
    return _reduce(values, active_only)


def _reduce(values, active_only):
    if active_only:
        values = [v for v in values if v > 0]
    return sum(values) / max(len(values), 1)


def test_triplet_loss_matches_hand_derived_values():
    anchor = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    positive = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)  # d_ap = 2, 0
    negative = np.array([[-1.0, 0.0], [0.6, 0.8]], np.float32)  # d_an = 4, 0.8
    got = keras.ops.convert_to_numpy(triplet_loss(anchor, positive, negative, margin=0.1))
    # max(2 - 4 + 0.1, 0) = 0;  max(0 - 0.8 + 0.1, 0) = 0 ; with margin 1: 0, 0.2
    np.testing.assert_allclose(got, [0.0, 0.0], atol=1e-6)
    got = keras.ops.convert_to_numpy(triplet_loss(anchor, positive, negative, margin=1.0))
    np.testing.assert_allclose(got, [0.0, 0.2], atol=1e-6)


def test_batch_hard_on_four_points_matches_hand_derived_value():
    # Two landmarks on the unit circle: A at 0 and 90 degrees, B at 180 and 100 degrees.
    angles = np.deg2rad([0.0, 90.0, 180.0, 100.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    labels = np.array([0, 0, 1, 1])
    # |u - v|^2 = 2 - 2 cos(theta). Anchor 1: hardest pos d=2 (0 deg), nearest neg 100deg: 2-2cos10.
    d10 = 2 - 2 * np.cos(np.deg2rad(10))
    d100 = 2 - 2 * np.cos(np.deg2rad(100))
    d80 = 2 - 2 * np.cos(np.deg2rad(80))
    expected = [
        max(2.0 - d100 + 0.1, 0),  # anchor 0: pos 90deg (d=2), nearest neg 100deg
        max(2.0 - d10 + 0.1, 0),  # anchor 1: pos 0deg, nearest neg 100deg
        max(d80 - 2.0 + 0.1, 0),  # anchor 2: pos 100deg (80 apart), nearest neg 90deg (d=2)
        max(d80 - d10 + 0.1, 0),  # anchor 3: pos 180deg, nearest neg 90deg (10 apart)
    ]
    got = float(mined_triplet_loss(labels, emb, "batch_hard", 0.1, "mean"))
    assert got == pytest.approx(np.mean(expected), abs=1e-5)


@pytest.mark.parametrize("reducer", ["mean", "mean_active"])
def test_batch_hard_loss_equals_loop_oracle(reducer):
    rng = np.random.default_rng(0)
    labels = _pk_labels(4, 3)
    emb = _unit_rows(rng, len(labels), 8)
    got = float(mined_triplet_loss(labels, emb, "batch_hard", 0.3, reducer))
    assert got == pytest.approx(
        _batch_hard_oracle(labels, emb, 0.3, reducer == "mean_active"), abs=1e-5
    )


@pytest.mark.parametrize("reducer", ["mean", "mean_active"])
def test_batch_semi_hard_loss_equals_loop_oracle(reducer):
    rng = np.random.default_rng(1)
    labels = _pk_labels(3, 4)
    emb = _unit_rows(rng, len(labels), 6)
    got = float(mined_triplet_loss(labels, emb, "batch_semi_hard", 0.2, reducer))
    assert got == pytest.approx(
        _semi_hard_oracle(labels, emb, 0.2, reducer == "mean_active"), abs=1e-5
    )


def test_random_triplet_loss_equals_loop_oracle():
    rng = np.random.default_rng(2)
    labels = _pk_labels(4, 2)
    emb = _unit_rows(rng, len(labels), 5)
    triplets = sample_random_triplets(labels, np.random.default_rng(3))
    expected = np.mean(
        [max(_sq(emb[a], emb[p]) - _sq(emb[a], emb[n]) + 0.1, 0) for a, p, n in triplets]
    )
    got = float(random_triplet_loss(emb, triplets, 0.1, "mean"))
    assert got == pytest.approx(expected, abs=1e-5)


def test_reduce_mean_active_ignores_zero_triplets():
    values = np.array([0.0, 0.3, 0.0, 0.1], np.float32)
    valid = np.ones(4, np.float32)
    assert float(reduce_triplets(values, valid, "mean_active")) == pytest.approx(0.2)
    assert float(reduce_triplets(values, valid, "mean")) == pytest.approx(0.1)


def test_reduce_rejects_unknown_reducer():
    with pytest.raises(ValueError, match="unknown reducer"):
        reduce_triplets(np.zeros(2, np.float32), np.ones(2, np.float32), "median")


def test_keras_wrapper_with_random_targets_equals_pure_function():
    rng = np.random.default_rng(4)
    labels = _pk_labels(3, 2)
    emb = _unit_rows(rng, len(labels), 4)
    targets = random_triplet_targets(labels, np.random.default_rng(5))
    triplets = np.concatenate([np.arange(len(labels))[:, None], targets[:, 1:]], axis=1)
    expected = float(random_triplet_loss(emb, triplets, 0.1, "mean"))
    assert float(TripletLoss(mining="random")(targets, emb)) == pytest.approx(expected, abs=1e-6)


def test_keras_wrapper_round_trips_through_its_config():
    loss = TripletLoss(mining="batch_semi_hard", margin=0.25, reducer="mean")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert (restored.mining, restored.margin, restored.reducer) == ("batch_semi_hard", 0.25, "mean")


def test_keras_wrapper_rejects_unknown_mining():
    with pytest.raises(ValueError, match="unknown mining"):
        TripletLoss(mining="hardest_ever")
