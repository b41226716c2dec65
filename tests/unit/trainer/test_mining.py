"""Miners pick the right index triplets; P x K batches are well formed."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainer.metric_learning.distances import pairwise_squared_l2, triplet_distances
from trainer.metric_learning.miners import (
    batch_hard,
    batch_semi_hard,
    mine,
    sample_random_triplets,
    triplets_from_rows,
)
from trainer.metric_learning.samplers import pk_batch_indices


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _mined_distances(distances, triplets):
    d_ap, d_an = triplet_distances(
        distances, triplets.anchors, triplets.positives, triplets.negatives
    )
    return _np(d_ap), _np(d_an), _np(triplets.valid)


def test_pairwise_squared_l2_matches_numpy():
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    expected = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(_np(pairwise_squared_l2(x)), expected, atol=1e-5)


def test_batch_hard_picks_farthest_positive_and_nearest_negative():
    # Points on a line: landmark 0 at 0, 1, 5; landmark 1 at 2, 10.
    x = np.array([[0.0], [1.0], [5.0], [2.0], [10.0]], np.float32)
    labels = np.array([0, 0, 0, 1, 1])
    distances = pairwise_squared_l2(x)
    triplets = batch_hard(labels, distances)
    np.testing.assert_array_equal(_np(triplets.anchors), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(_np(triplets.positives), [2, 2, 0, 4, 3])
    np.testing.assert_array_equal(_np(triplets.negatives), [3, 3, 3, 1, 2])
    d_ap, d_an, valid = _mined_distances(distances, triplets)
    np.testing.assert_allclose(d_ap, [25, 16, 25, 64, 64])
    np.testing.assert_allclose(d_an, [4, 1, 9, 1, 25])
    np.testing.assert_array_equal(valid, [1, 1, 1, 1, 1])


def test_batch_hard_marks_anchor_without_positive_invalid():
    x = np.array([[0.0], [1.0], [3.0]], np.float32)
    triplets = batch_hard(np.array([0, 0, 1]), pairwise_squared_l2(x))
    np.testing.assert_array_equal(_np(triplets.valid), [1, 1, 0])


def test_batch_hard_picks_a_positive_even_when_all_positives_are_at_distance_zero():
    # Anchor 0 and its positive coincide; the negative is at distance 4.
    x = np.array([[0.0], [0.0], [2.0]], np.float32)
    triplets = batch_hard(np.array([0, 0, 1]), pairwise_squared_l2(x))
    assert _np(triplets.positives)[0] == 1
    d_ap, _, _ = _mined_distances(pairwise_squared_l2(x), triplets)
    assert d_ap[0] == 0.0


def test_batch_semi_hard_picks_nearest_negative_beyond_the_positive():
    # Anchor 0 at 0, positive at 2 (d=4); negatives at 1 (d=1), 3 (d=9), 4 (d=16).
    x = np.array([[0.0], [2.0], [1.0], [3.0], [4.0]], np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    distances = pairwise_squared_l2(x)
    triplets = batch_semi_hard(labels, distances)
    assert (_np(triplets.anchors)[0, 1], _np(triplets.positives)[0, 1]) == (0, 1)
    assert _np(triplets.negatives)[0, 1] == 3
    _, d_an, valid = _mined_distances(distances, triplets)
    assert d_an[0, 1] == pytest.approx(9.0)
    assert valid[0, 1] == 1 and valid[0, 0] == 0 and valid[0, 2] == 0


def test_batch_semi_hard_falls_back_to_farthest_negative():
    # Anchor 0 at 0, positive at 5 (d=25); negatives at 1 and 2 are both nearer.
    x = np.array([[0.0], [5.0], [1.0], [2.0]], np.float32)
    distances = pairwise_squared_l2(x)
    triplets = batch_semi_hard(np.array([0, 0, 1, 1]), distances)
    assert _np(triplets.negatives)[0, 1] == 3
    _, d_an, _ = _mined_distances(distances, triplets)
    assert d_an[0, 1] == pytest.approx(4.0)


def test_mine_runs_batch_miners_only():
    """Random triplets are drawn outside the graph, so ``mine`` has no ``random`` strategy."""
    x = np.array([[0.0], [1.0], [3.0], [4.0]], np.float32)
    labels = np.array([0, 0, 1, 1])
    expected = batch_hard(labels, pairwise_squared_l2(x))
    got = mine("batch_hard", labels, pairwise_squared_l2(x))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b))
    with pytest.raises(ValueError, match="unknown batch mining strategy"):
        mine("random", labels, pairwise_squared_l2(x))


def test_triplets_from_rows_marks_padding_rows_invalid():
    rows = np.array([[0, 1, 2], [1, -1, -1]], np.int32)
    triplets = triplets_from_rows(rows)
    np.testing.assert_array_equal(_np(triplets.valid), [1, 0])
    np.testing.assert_array_equal(_np(triplets.positives), [1, 0])


def test_pk_batches_have_p_landmarks_of_k_photos():
    labels = np.repeat(np.arange(6), [2, 3, 5, 7, 4, 9])
    batches = pk_batch_indices(labels, p=3, k=2, rng=np.random.default_rng(0))
    for batch in batches:
        assert len(batch) == 6
        groups = labels[batch].reshape(3, 2)
        assert (groups == groups[:, :1]).all()
        assert len(set(groups[:, 0])) == 3


def test_pk_batches_cover_every_photo():
    labels = np.repeat(np.arange(5), [2, 3, 5, 7, 4])
    batches = pk_batch_indices(labels, p=2, k=3, rng=np.random.default_rng(1))
    assert set(np.concatenate(batches)) == set(range(len(labels)))


def test_pk_batches_are_reproducible_from_the_seed():
    labels = np.repeat(np.arange(5), 4)
    a = pk_batch_indices(labels, 2, 2, np.random.default_rng(7))
    b = pk_batch_indices(labels, 2, 2, np.random.default_rng(7))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))


def test_pk_batches_reject_too_few_landmarks():
    with pytest.raises(ValueError, match="only 1 landmarks"):
        pk_batch_indices(np.array([0, 0, 1]), 2, 2, np.random.default_rng(0))


def test_random_triplets_have_matching_positive_and_other_negative():
    labels = np.array([0, 0, 1, 1, 2])
    triplets = sample_random_triplets(labels, np.random.default_rng(0))
    assert len(triplets) == 4  # the lone photo of landmark 2 has no positive
    for a, p, n in triplets:
        assert a != p and labels[a] == labels[p] and labels[a] != labels[n]
