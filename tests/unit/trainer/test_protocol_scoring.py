"""Scoring a fold: ranks, the decision rules, calibration with removed landmarks, pooling."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.vote import margin_confidence
from trainer.evaluation.decisions import calibrate
from trainer.protocol.scoring import (
    MARGIN_RULE,
    Embedded,
    QueryOutcomes,
    RuleOutcome,
    decision_figures,
    group_figures,
    score_queries,
)


def on_circle(degrees: list[float], landmarks: list[str]) -> Embedded:
    """Unit vectors at the given angles (cosine similarity = cos of the angle between)."""
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return Embedded(
        np.stack([np.cos(radians), np.sin(radians)], axis=1),
        tuple(landmarks),
        tuple(lm.upper() for lm in landmarks),
    )


GALLERY = on_circle([0, 10, 90, 100, 180], ["a", "a", "b", "b", "c"])


def test_score_queries_ranks_and_right_answers():
    queries = on_circle([2, 95, 60, 170], ["a", "b", "b", "z"])
    outcome = score_queries(queries, GALLERY, threshold=0.0, ks=(1, 5))
    # 60 degrees is 30 from b's nearest reference and 50 from a's; "z" has no reference.
    assert outcome.ranks.tolist() == [1, 1, 1, 0]
    assert outcome.expected == ("a", "b", "b", None)
    assert outcome.margin.predictions == ("a", "b", "b", "c")


def test_margin_rule_confidence_is_the_cosine_margin_over_the_best_other_landmark():
    queries = on_circle([40], ["a"])
    outcome = score_queries(queries, GALLERY, threshold=0.0)
    expected = margin_confidence(np.cos(np.deg2rad(30)) - np.cos(np.deg2rad(50)))
    assert outcome.margin.predictions == ("a",)
    assert outcome.margin.confidences[0] == pytest.approx(expected)


def test_below_the_threshold_nothing_is_published_and_the_winner_is_kept():
    # 49 degrees: a's best is 39 away, b's 41 away: a wins by a small margin.
    queries = on_circle([2, 49], ["a", "a"])
    outcome = score_queries(queries, GALLERY, threshold=0.5)
    assert outcome.margin.predictions == ("a", "a")
    assert outcome.margin.published == ("a", None)
    assert outcome.thresholds == (0.5, 0.5)


def test_calibration_without_removed_landmarks_publishes_everything_right():
    val = on_circle([1, 92, 178], ["a", "b", "c"])
    calibration = calibrate(val, GALLERY, (), MARGIN_RULE, target_precision=0.9)
    assert calibration.reached and calibration.coverage == 1.0 and calibration.queries == 3


def test_calibration_adds_removed_landmarks_photos_as_open_set_queries():
    """Photos of a landmark without references must not be published: the threshold rises."""
    val = on_circle([1, 3, 92, 178], ["a", "a", "b", "c"])
    calibration = calibrate(val, GALLERY, ("a",), MARGIN_RULE, target_precision=1.0)
    assert calibration.queries == 6
    # Without a's references, a's photos land on b at about 87-89 degrees' margin over c: their
    # confidences are high, so precision 1 needs a threshold above them.
    open_set = score_queries(
        val.subset([True, True, False, False]),
        GALLERY.subset([lm != "a" for lm in GALLERY.landmark_ids]),
        threshold=0.0,
    )
    assert calibration.threshold > max(open_set.margin.confidences)


def test_decision_figures_count_unknown_answers_and_wrong_ones():
    outcome = RuleOutcome(
        ("a", "b", "c", None), np.array([0.9, 0.8, 0.1, 0.0]), ("a", "b", None, None)
    )
    figures = decision_figures(outcome, ("a", "a", "c", "d"))
    assert figures["accuracy"] == 0.25
    assert figures["precision"] == 0.5
    assert figures["unknown_rate"] == 0.5
    # GAP: ranked a(right), b(wrong), c(right): (1/1 + 2/3) / 4 queries with a truth.
    assert figures["gap"] == pytest.approx((1 + 2 / 3) / 4)


def test_precision_is_none_when_nothing_is_published():
    outcome = RuleOutcome(("a",), np.array([0.1]), (None,))
    assert decision_figures(outcome, ("a",))["precision"] is None


def test_pooling_concatenates_queries_so_hit_rates_are_query_weighted():
    first = score_queries(on_circle([2], ["a"]), GALLERY, threshold=0.2)
    second = score_queries(on_circle([60, 95, 178], ["a", "b", "c"]), GALLERY, threshold=0.4)
    pooled = group_figures(QueryOutcomes.concatenate([first, second]))
    one, other = group_figures(first), group_figures(second)
    assert pooled["queries"] == 4
    assert pooled["hit_at_k"]["1"] == pytest.approx(
        (one["hit_at_k"]["1"] * 1 + other["hit_at_k"]["1"] * 3) / 4
    )
    assert pooled["margin"]["thresholds"] == [0.2, 0.4]
    assert pooled["legacy"]["threshold"] == 0.5
