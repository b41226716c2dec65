"""Tests for trainer.evaluation.retrieval (hit@k, its random baseline) and
trainer.evaluation.recognition (the vote's accuracy, GAP)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from schemas.vote import VoteSettings
from trainer.evaluation.recognition import gap, vote_accuracy
from trainer.evaluation.retrieval import hit_at_k, nearest_references, random_hit_at_k


def on_circle(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


# Six references on the unit circle and four queries, small enough to rank by hand.
REF_EMB = on_circle([0, 10, 20, 90, 180, -10])
REF_LABELS = ["a", "a", "b", "b", "c", "a"]
REF_NAMES = ["A", "A", "B", "B", "C", "A"]
QUERY_EMB = on_circle([0, 17, 135, 175])


def plain_loop_hit_at_k(query_emb, query_labels, ref_emb, ref_labels, ks):
    """The paper's definition, one query and one k at a time."""
    result = {}
    for k in ks:
        hits = 0
        for query, truth in zip(query_emb, query_labels, strict=True):
            distances = [float(np.sum((query - ref) ** 2)) for ref in ref_emb]
            order = sorted(range(len(ref_emb)), key=lambda i: (distances[i], i))
            hits += truth in [ref_labels[i] for i in order[:k]]
        result[k] = hits / len(query_labels)
    return result


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows = rng.normal(size=(n, d))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_hit_at_k_ranks_hand_placed_points_as_derived_by_hand() -> None:
    """q0 a: rank 1; q1 b: rank 1; q2 d: no reference; q3 b: rank 2 (behind c at 180°)."""
    result = hit_at_k(QUERY_EMB, ["a", "b", "d", "b"], REF_EMB, REF_LABELS, ks=[1, 2, 3])
    assert result == {1: 0.5, 2: 0.75, 3: 0.75}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hit_at_k_matches_a_plain_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    refs, queries = unit_rows(rng, 40, 8), unit_rows(rng, 25, 8)
    ref_labels = [str(label) for label in rng.integers(0, 6, 40)]
    query_labels = [str(label) for label in rng.integers(0, 7, 25)]
    ks = range(1, 51)
    expected = plain_loop_hit_at_k(queries, query_labels, refs, ref_labels, ks)
    assert hit_at_k(queries, query_labels, refs, ref_labels, ks) == expected


def test_hit_at_k_clamps_k_above_the_number_of_references() -> None:
    result = hit_at_k(QUERY_EMB, ["a", "b", "d", "b"], REF_EMB, REF_LABELS, ks=[6, 50])
    assert result == {6: 0.75, 50: 0.75}


def test_hit_at_k_counts_a_query_without_references_as_a_miss() -> None:
    assert hit_at_k(QUERY_EMB[2:3], ["d"], REF_EMB, REF_LABELS, ks=[6]) == {6: 0.0}


def test_hit_at_k_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="3 query labels for 4 queries"):
        hit_at_k(QUERY_EMB, ["a", "b", "c"], REF_EMB, REF_LABELS)


def test_hit_at_k_rejects_k_below_one() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        hit_at_k(QUERY_EMB, ["a"] * 4, REF_EMB, REF_LABELS, ks=[0])


def test_nearest_references_breaks_distance_ties_by_reference_index() -> None:
    """Query at 0° is 10° from both r1 (10°) and r5 (-10°): r1 comes first."""
    indices, distances = nearest_references(QUERY_EMB[:1], REF_EMB, 3)
    assert indices.tolist() == [[0, 1, 5]]
    assert distances[0, 1] == pytest.approx(distances[0, 2])


def test_nearest_references_keeps_ties_at_the_cut_in_index_order() -> None:
    """References 1, 2 and 4 are the same point: with k=2 the cut falls inside the tie."""
    refs = on_circle([50, 10, 10, 90, 10])
    indices, _ = nearest_references(on_circle([0]), refs, 2)
    assert indices.tolist() == [[1, 2]]


def test_hit_at_k_with_duplicate_references_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(7)
    distinct = unit_rows(rng, 6, 3)
    refs = distinct[rng.integers(0, 6, 30)]
    ref_labels = [str(label) for label in rng.integers(0, 4, 30)]
    queries = distinct[rng.integers(0, 6, 12)]
    query_labels = [str(label) for label in rng.integers(0, 4, 12)]
    ks = range(1, 31)
    expected = plain_loop_hit_at_k(queries, query_labels, refs, ref_labels, ks)
    assert hit_at_k(queries, query_labels, refs, ref_labels, ks) == expected


def test_random_hit_at_k_matches_values_derived_by_hand() -> None:
    """n = 6; query a has m = 3 references, b has 2, d none.
    k=1: (3/6 + 2/6 + 0 + 2/6) / 4 = 7/24; k=2: (1-3/15 + 1-6/15 + 0 + 1-6/15) / 4 = 1/2."""
    result = random_hit_at_k(REF_LABELS, ["a", "b", "d", "b"], ks=[1, 2])
    assert result == pytest.approx({1: 7 / 24, 2: 0.5}, abs=1e-15)


def test_random_hit_at_k_matches_enumerating_every_k_subset() -> None:
    ref_labels = ["a", "a", "b", "c", "c", "c", "d"]
    query_labels = ["a", "b", "c", "e"]
    for k in range(1, len(ref_labels) + 1):
        subsets = list(combinations(ref_labels, k))
        expected = np.mean(
            [np.mean([truth in subset for subset in subsets]) for truth in query_labels]
        )
        assert random_hit_at_k(ref_labels, query_labels, ks=[k])[k] == pytest.approx(expected)


def test_random_hit_at_k_is_one_once_k_covers_every_reference() -> None:
    assert random_hit_at_k(["a", "b", "b"], ["a", "b"], ks=[3, 50]) == {3: 1.0, 50: 1.0}


UNIFORM_K3 = VoteSettings(k=3, weighting="uniform", threshold=0.5, rule="weighted_knn")


def test_vote_accuracy_at_threshold_matches_hand_count() -> None:
    """Votes (k=3, uniform): q0 a a a → a 1.0; q1 b a a → a 2/3; q2 b c b → b 2/3 (its
    landmark d has no reference, so unknown is right); q3 c b b → b 2/3 (truth c)."""
    report = vote_accuracy(
        QUERY_EMB, ["a", "b", "d", "c"], REF_EMB, REF_LABELS, REF_NAMES, UNIFORM_K3
    )
    assert report.predictions == ["a", "a", "b", "b"]
    assert report.confidences == pytest.approx([1.0, 2 / 3, 2 / 3, 2 / 3])
    assert (report.at_threshold.accuracy, report.at_threshold.unknown_rate) == (0.25, 0.0)
    assert report.at_threshold.precision == 0.25


def test_vote_accuracy_sweep_rejects_uncertain_votes_above_their_confidence() -> None:
    report = vote_accuracy(
        QUERY_EMB,
        ["a", "b", "d", "c"],
        REF_EMB,
        REF_LABELS,
        REF_NAMES,
        UNIFORM_K3,
        thresholds=[0.7],
    )
    (point,) = report.sweep
    assert (point.accuracy, point.unknown_rate, point.precision) == (0.5, 0.75, 1.0)


def test_vote_accuracy_precision_is_none_when_every_query_is_unknown() -> None:
    report = vote_accuracy(
        QUERY_EMB[1:2], ["b"], REF_EMB, REF_LABELS, REF_NAMES, UNIFORM_K3, thresholds=[0.9]
    )
    assert report.sweep[0].precision is None


def test_vote_accuracy_unknown_rate_never_falls_as_the_threshold_rises() -> None:
    rng = np.random.default_rng(3)
    refs, queries = unit_rows(rng, 60, 6), unit_rows(rng, 30, 6)
    report = vote_accuracy(
        queries,
        [str(label) for label in rng.integers(0, 5, 30)],
        refs,
        [str(label) for label in rng.integers(0, 5, 60)],
        ["n"] * 60,
        VoteSettings(k=7),
    )
    rates = [point.unknown_rate for point in report.sweep]
    assert rates == sorted(rates)


@pytest.mark.parametrize("threshold", [0.0, 0.35, 0.5, 0.6, 0.8])
def test_vote_accuracy_sweep_agrees_with_the_vote_at_its_own_threshold(threshold: float) -> None:
    rng = np.random.default_rng(4)
    refs, queries = unit_rows(rng, 50, 5), unit_rows(rng, 40, 5)
    settings = VoteSettings(k=5, weighting="similarity", threshold=threshold)
    report = vote_accuracy(
        queries,
        [str(label) for label in rng.integers(0, 5, 40)],
        refs,
        [str(label) for label in rng.integers(0, 4, 50)],
        ["n"] * 50,
        settings,
        thresholds=[threshold],
    )
    assert report.sweep == [report.at_threshold]


def test_vote_accuracy_rejects_embeddings_that_are_not_unit_vectors() -> None:
    with pytest.raises(ValueError, match="unit vectors"):
        vote_accuracy(QUERY_EMB * 2, ["a"] * 4, REF_EMB, REF_LABELS, REF_NAMES, UNIFORM_K3)


def test_gap_matches_hand_computation() -> None:
    """Ranked a✓ (P=1), b✗, c✓ (P=2/3): GAP = (1 + 2/3) / 3."""
    result = gap(["a", "b", "c"], [0.9, 0.8, 0.7], ["a", "x", "c"])
    assert result == pytest.approx((1 + 2 / 3) / 3)


def test_gap_counts_a_query_without_prediction_in_the_denominator() -> None:
    assert gap(["a", None], [0.9, 0.0], ["a", "b"]) == pytest.approx(0.5)


def test_gap_treats_a_prediction_for_a_non_landmark_query_as_wrong() -> None:
    """Ranked: x for a non-landmark (✗), then a✓ at position 2: GAP = (1/2) / 1."""
    assert gap(["x", "a"], [0.9, 0.5], [None, "a"]) == pytest.approx(0.5)


def test_gap_ranks_by_confidence_not_by_input_order() -> None:
    assert gap(["x", "a"], [0.1, 0.9], ["y", "a"]) == pytest.approx(0.5)


def test_gap_keeps_input_order_on_equal_confidence() -> None:
    assert gap(["a", "x"], [0.5, 0.5], ["a", "y"]) == pytest.approx(0.5)
    assert gap(["x", "a"], [0.5, 0.5], ["y", "a"]) == pytest.approx(0.25)


def test_gap_rejects_queries_without_any_true_landmark() -> None:
    with pytest.raises(ValueError, match="undefined"):
        gap(["a"], [1.0], [None])


def test_gap_of_the_vote_on_the_hand_example_is_one_third() -> None:
    report = vote_accuracy(
        QUERY_EMB, ["a", "b", "d", "c"], REF_EMB, REF_LABELS, REF_NAMES, UNIFORM_K3
    )
    truths = ["a", "b", None, "c"]
    assert gap(report.predictions, report.confidences, truths) == pytest.approx(1 / 3)
