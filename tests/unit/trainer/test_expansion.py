"""alpha-query expansion and database-side augmentation on unit vectors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.trainer.test_protocol_scoring import GALLERY, on_circle
from trainer.evaluation.expansion import (
    Expansion,
    alpha_query_expansion,
    database_augmentation,
)
from trainer.protocol.scoring import score_queries


def _unit(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_query_expansion_moves_a_query_towards_its_nearest_references():
    gallery = _unit([0, 10, 90])
    expanded = alpha_query_expansion(_unit([30]), gallery, n=2, alpha=0.0)
    # alpha 0: plain average of the query and its two nearest (0 and 10 degrees).
    expected = _unit([30])[0] + gallery[0] + gallery[1]
    np.testing.assert_allclose(expanded[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert np.linalg.norm(expanded, axis=1) == pytest.approx([1.0])


def test_alpha_weights_favour_the_more_similar_neighbour():
    gallery = _unit([0, 60])
    flat = alpha_query_expansion(_unit([20]), gallery, n=2, alpha=0.0)
    sharp = alpha_query_expansion(_unit([20]), gallery, n=2, alpha=10.0)
    angle = lambda v: np.rad2deg(np.arctan2(v[0, 1], v[0, 0]))  # noqa: E731
    assert angle(sharp) < angle(flat)


def test_negative_similarities_add_nothing():
    gallery = _unit([180])
    np.testing.assert_allclose(alpha_query_expansion(_unit([0]), gallery, 1, 1.0), _unit([0]))


def test_database_augmentation_never_counts_a_reference_as_its_own_neighbour():
    gallery = _unit([0, 20, 90])
    augmented = database_augmentation(gallery, n=1, alpha=0.0)
    expected = gallery[0] + gallery[1]
    np.testing.assert_allclose(augmented[0], expected / np.linalg.norm(expected), atol=1e-6)
    # A one-vector gallery has no other neighbour: unchanged.
    np.testing.assert_allclose(database_augmentation(gallery[:1], n=2), gallery[:1])


def test_no_expansion_leaves_everything_as_it_is_and_bad_settings_are_refused():
    plain = score_queries(on_circle([40, 95], ["a", "b"]), GALLERY, 0.0)
    same = score_queries(on_circle([40, 95], ["a", "b"]), GALLERY, 0.0, expansion=Expansion())
    np.testing.assert_array_equal(plain.margin.confidences, same.margin.confidences)
    with pytest.raises(ValueError, match="negative"):
        Expansion(query_neighbours=-1)


def test_scoring_searches_the_expanded_query_in_the_augmented_gallery():
    # 48 degrees: a's nearest reference is 38 away, b's 42: a wins narrowly. Expansion pulls the
    # query towards a's reference (and DBA a's references together): a wins by more.
    queries = on_circle([48], ["a"])
    expanded = score_queries(queries, GALLERY, 0.0, expansion=Expansion(1, 1, 3.0))
    plain = score_queries(queries, GALLERY, 0.0)
    assert expanded.margin.predictions == plain.margin.predictions == ("a",)
    assert expanded.margin.confidences[0] > plain.margin.confidences[0]
