"""The decision rules (margin and weighted kNN): hand-derived cases and invariants."""

from __future__ import annotations

import math
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from schema_strategies import neighbours, vote_settings

from schemas.errors import InputError
from schemas.tag_event import Landmark, Neighbour
from schemas.vote import MARGIN_SCALE, SIMILARITY_EPSILON, VoteSettings, decide_landmark


def _n(reference_id: str, landmark_id: str, distance: float) -> Neighbour:
    return Neighbour(reference_id, landmark_id, landmark_id.upper(), distance)


def test_no_neighbours_decide_nothing_with_zero_confidence() -> None:
    assert decide_landmark([], VoteSettings()) == (None, 0.0)


def test_uniform_vote_counts_each_neighbour_once() -> None:
    found = [_n("r1", "a", 0.1), _n("r2", "b", 0.2), _n("r3", "b", 0.3), _n("r4", "a", 3.0)]
    settings = VoteSettings(k=3, weighting="uniform", threshold=0.5, rule="weighted_knn")
    landmark, confidence = decide_landmark(found, settings)
    assert landmark == Landmark("b", "B")
    assert confidence == pytest.approx(2 / 3)


def test_inverse_rank_vote_weighs_one_over_rank_plus_one() -> None:
    found = [_n("r1", "a", 0.1), _n("r2", "b", 0.2), _n("r3", "b", 0.3)]
    settings = VoteSettings(k=3, weighting="inverse_rank", threshold=0.0, rule="weighted_knn")
    # a: 1, b: 1/2 + 1/3 = 5/6 -> a wins with 1 / (11/6).
    landmark, confidence = decide_landmark(found, settings)
    assert landmark == Landmark("a", "A")
    assert confidence == pytest.approx(6 / 11)


def test_similarity_vote_weighs_cosine_similarity() -> None:
    found = [_n("r1", "a", 0.4), _n("r2", "b", 1.0), _n("r3", "b", 1.2)]
    settings = VoteSettings(k=3, weighting="similarity", threshold=0.0, rule="weighted_knn")
    # cosine = 1 - d/2: a 0.8; b 0.5 + 0.4 = 0.9.
    eps = SIMILARITY_EPSILON
    expected = (0.9 + 2 * eps) / (1.7 + 3 * eps)
    landmark, confidence = decide_landmark(found, settings)
    assert landmark == Landmark("b", "B")
    assert confidence == pytest.approx(expected)


def test_only_the_first_k_neighbours_vote() -> None:
    found = [_n("r1", "a", 0.1), _n("r2", "b", 0.2), _n("r3", "b", 0.3)]
    settings = VoteSettings(k=1, weighting="uniform", threshold=0.5, rule="weighted_knn")
    assert decide_landmark(found, settings) == (Landmark("a", "A"), 1.0)


def test_neighbours_vote_nearest_first_whatever_the_input_order() -> None:
    found = [_n("r3", "b", 0.3), _n("r2", "b", 0.2), _n("r1", "a", 0.1)]
    settings = VoteSettings(k=1, weighting="uniform", threshold=0.5, rule="weighted_knn")
    assert decide_landmark(found, settings)[0] == Landmark("a", "A")


def test_below_threshold_decides_nothing_but_reports_confidence() -> None:
    found = [_n("r1", "a", 0.1), _n("r2", "b", 0.2)]
    settings = VoteSettings(k=2, weighting="uniform", threshold=0.6, rule="weighted_knn")
    assert decide_landmark(found, settings) == (None, 0.5)


def test_tie_goes_to_the_landmark_with_the_nearer_best_neighbour() -> None:
    found = [_n("r1", "z", 0.1), _n("r2", "a", 0.2)]
    settings = VoteSettings(k=2, weighting="uniform", threshold=0.0, rule="weighted_knn")
    assert decide_landmark(found, settings)[0] == Landmark("z", "Z")


def test_tie_at_equal_distance_goes_to_the_smaller_landmark_id() -> None:
    found = [_n("r1", "z", 0.1), _n("r2", "a", 0.1)]
    settings = VoteSettings(k=2, weighting="uniform", threshold=0.0, rule="weighted_knn")
    assert decide_landmark(found, settings)[0] == Landmark("a", "A")


def test_far_neighbours_still_count_under_similarity() -> None:
    found = [_n("r1", "a", 3.5)]
    assert decide_landmark(found, VoteSettings(k=1, threshold=1.0, rule="weighted_knn")) == (
        Landmark("a", "A"),
        1.0,
    )


def test_k_below_one_is_refused() -> None:
    with pytest.raises(InputError, match=r"vote\.k"):
        VoteSettings(k=0)


@given(st.lists(neighbours, max_size=12), vote_settings)
def test_confidence_is_between_zero_and_one(found: list[Neighbour], settings: VoteSettings) -> None:
    _, confidence = decide_landmark(found, settings)
    assert 0.0 <= confidence <= 1.0


@given(st.lists(neighbours, max_size=12), vote_settings)
def test_a_decision_is_never_below_threshold(
    found: list[Neighbour], settings: VoteSettings
) -> None:
    landmark, confidence = decide_landmark(found, settings)
    assert landmark is None or confidence >= settings.threshold


@given(st.lists(neighbours, max_size=12), vote_settings, st.randoms())
def test_permuting_neighbours_does_not_change_the_decision(
    found: list[Neighbour], settings: VoteSettings, rng: Random
) -> None:
    shuffled = list(found)
    rng.shuffle(shuffled)
    assert decide_landmark(shuffled, settings) == decide_landmark(found, settings)


@given(
    st.lists(st.floats(min_value=0.0, max_value=4.0), min_size=1, max_size=12),
    vote_settings.filter(lambda s: s.rule == "weighted_knn"),
)
def test_unanimous_neighbours_give_confidence_one_in_the_weighted_vote(
    found_distances: list[float], settings: VoteSettings
) -> None:
    found = [_n(f"r{i}", "a", d) for i, d in enumerate(found_distances)]
    assert decide_landmark(found, settings) == (Landmark("a", "A"), 1.0)


MARGIN = VoteSettings(k=5, threshold=0.0, rule="margin")


def test_margin_rule_names_the_nearest_landmark_even_when_outnumbered() -> None:
    found = [_n("r1", "a", 0.1), _n("r2", "b", 0.2), _n("r3", "b", 0.3), _n("r4", "b", 0.4)]
    assert decide_landmark(found, MARGIN)[0] == Landmark("a", "A")
    weighted = VoteSettings(k=5, weighting="uniform", threshold=0.0, rule="weighted_knn")
    assert decide_landmark(found, weighted)[0] == Landmark("b", "B")


def test_margin_confidence_is_one_minus_exp_of_the_cosine_margin_over_its_scale() -> None:
    # Similarities 1 - d/2: a 0.95, b 0.90; margin 0.05 -> 1 - exp(-0.5).
    found = [_n("r1", "a", 0.1), _n("r2", "b", 0.2), _n("r3", "a", 0.3)]
    _, confidence = decide_landmark(found, MARGIN)
    assert confidence == pytest.approx(1.0 - math.exp(-0.05 / MARGIN_SCALE))


def test_margin_without_another_landmark_is_taken_against_the_last_neighbour() -> None:
    found = [_n("r1", "a", 0.1), _n("r2", "a", 0.5)]
    _, confidence = decide_landmark(found, MARGIN)
    assert confidence == pytest.approx(1.0 - math.exp(-0.2 / MARGIN_SCALE))


def test_margin_of_a_tie_between_landmarks_gives_zero_confidence() -> None:
    found = [_n("r1", "b", 0.2), _n("r2", "a", 0.2)]
    assert decide_landmark(found, MARGIN) == (Landmark("a", "A"), 0.0)


def test_margin_confidence_below_threshold_answers_no_landmark() -> None:
    found = [_n("r1", "a", 0.1), _n("r2", "b", 0.12)]
    settings = VoteSettings(k=5, threshold=0.5, rule="margin")
    landmark, confidence = decide_landmark(found, settings)
    assert landmark is None and 0.0 < confidence < 0.5


@given(st.floats(min_value=0.0, max_value=1.9), st.floats(min_value=0.0, max_value=1.9))
def test_margin_confidence_grows_with_the_margin(gap_1: float, gap_2: float) -> None:
    """A larger distance to the runner-up never lowers the confidence."""
    small, large = sorted((gap_1, gap_2))
    confidences = [
        decide_landmark([_n("r1", "a", 0.1), _n("r2", "b", 0.1 + gap)], MARGIN)[1]
        for gap in (small, large)
    ]
    assert confidences[0] <= confidences[1]


def test_manifest_vote_without_a_rule_is_the_legacy_weighted_vote() -> None:
    legacy = VoteSettings.from_dict({"k": 5, "weighting": "similarity", "threshold": 0.5})
    assert legacy.rule == "weighted_knn"
    assert VoteSettings.from_dict(MARGIN.to_dict()) == MARGIN


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(InputError, match=r"vote\.rule"):
        VoteSettings.from_dict({"k": 5, "weighting": "similarity", "threshold": 0.5, "rule": "x"})


@given(st.lists(neighbours, min_size=1, max_size=12), vote_settings)
def test_the_winner_is_among_the_voters(found: list[Neighbour], settings: VoteSettings) -> None:
    landmark, _ = decide_landmark(found, settings)
    voters = sorted(found, key=lambda n: (n.distance, n.landmark_id, n.reference_id))
    assert landmark is None or landmark.landmark_id in {n.landmark_id for n in voters[: settings.k]}
