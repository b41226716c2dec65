"""Learned whitening: what it does to the scatter, and the exported layer equals the numpy map."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from trainer.model.whitening import fit_learned_whitening, with_whitening


def _landmarks(seed: int = 0, landmarks: int = 6, photos: int = 12) -> tuple[np.ndarray, list[str]]:
    """Landmark centres differ in dims 0-1; photos of one landmark vary a lot in dims 2-3."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for landmark in range(landmarks):
        centre = np.zeros(6)
        centre[:2] = rng.normal(0, 1.0, 2)
        for _ in range(photos):
            noise = np.concatenate(
                [rng.normal(0, 0.1, 2), rng.normal(0, 3.0, 2), rng.normal(0, 0.1, 2)]
            )
            rows.append(centre + noise)
            labels.append(f"l{landmark}")
    return np.asarray(rows), labels


def _nearest_neighbour_accuracy(x: np.ndarray, labels: list[str]) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    return float(np.mean([labels[i] == labels[j] for i, j in enumerate(nearest)]))


def test_whitening_suppresses_the_directions_photos_of_one_landmark_vary_in() -> None:
    x, labels = _landmarks()
    whitening = fit_learned_whitening(x, labels, shrinkage=0.0)
    test_x, test_labels = _landmarks(seed=1)
    before = _nearest_neighbour_accuracy(test_x, test_labels)
    after = _nearest_neighbour_accuracy(whitening.apply(test_x), test_labels)
    assert after > before + 0.3


def test_whitened_embeddings_are_unit_rows_of_the_asked_dimension() -> None:
    x, labels = _landmarks()
    out = fit_learned_whitening(x, labels, dim=3).apply(x)
    assert out.shape == (len(x), 3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_exported_layer_gives_the_numpy_whitening() -> None:
    x, labels = _landmarks()
    whitening = fit_learned_whitening(x, labels, dim=4)
    inputs = keras.Input((6,))
    identity = keras.Model(inputs, keras.layers.Identity()(inputs), name="identity_embedding")
    model = with_whitening(identity, whitening)
    out = keras.ops.convert_to_numpy(model(x.astype(np.float32)))
    np.testing.assert_allclose(out, whitening.apply(x), atol=1e-4)


@pytest.mark.parametrize(("dim", "shrinkage"), [(0, 0.1), (7, 0.1), (None, -1.0)])
def test_bad_dimension_or_shrinkage_is_refused(dim: int | None, shrinkage: float) -> None:
    x, labels = _landmarks()
    with pytest.raises(ValueError):
        fit_learned_whitening(x, labels, dim=dim, shrinkage=shrinkage)


def test_whitening_needs_two_landmarks_with_two_photos() -> None:
    with pytest.raises(ValueError, match="two landmarks"):
        fit_learned_whitening(np.eye(3), ["a", "b", "c"])
