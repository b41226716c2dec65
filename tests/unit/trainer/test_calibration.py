"""Calibrating the "no landmark" threshold for a target precision."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainer.evaluation.calibration import calibrate_threshold


def test_threshold_keeps_the_most_answers_that_reach_the_precision() -> None:
    # Ranked: 0.9 right, 0.8 right, 0.7 wrong, 0.6 right, 0.5 wrong.
    predictions = ["a", "b", "x", "c", "y"]
    confidences = [0.9, 0.8, 0.7, 0.6, 0.5]
    expected = ["a", "b", "c", "c", "d"]
    calibration = calibrate_threshold(predictions, confidences, expected, target_precision=0.75)
    # Cut after 0.6: 3 right of 4 = 0.75.
    assert calibration.threshold == 0.6
    assert calibration.precision == pytest.approx(0.75)
    assert calibration.coverage == pytest.approx(0.8)
    assert calibration.reached


def test_equal_confidences_are_published_or_withheld_together() -> None:
    predictions = ["a", "x", "b"]
    confidences = [0.9, 0.5, 0.5]
    expected = ["a", "c", "b"]
    calibration = calibrate_threshold(predictions, confidences, expected, target_precision=0.9)
    # Publishing at 0.5 gives 2/3; the threshold cannot split the two 0.5s.
    assert calibration.threshold == 0.9
    assert calibration.coverage == pytest.approx(1 / 3)


def test_landmark_published_for_a_query_outside_the_gallery_is_wrong() -> None:
    calibration = calibrate_threshold(["a", "b"], [0.9, 0.8], ["a", None], target_precision=0.9)
    assert calibration.threshold == 0.9


def test_unreachable_target_publishes_nothing() -> None:
    calibration = calibrate_threshold(["x", "y"], [0.9, 0.8], ["a", "b"], target_precision=0.5)
    assert not calibration.reached
    assert calibration.threshold > 0.9 and calibration.coverage == 0.0


def test_queries_without_a_winner_are_never_answered() -> None:
    calibration = calibrate_threshold(["a", None], [0.7, 0.0], ["a", "b"], target_precision=0.9)
    assert calibration.threshold == 0.7 and calibration.coverage == 0.5


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.floats(min_value=0.0, max_value=1.0),
            st.sampled_from(["a", "b", "c", None]),
        ),
        min_size=1,
        max_size=40,
    ),
    st.floats(min_value=0.05, max_value=1.0),
)
def test_calibrated_threshold_reaches_the_target_and_no_lower_one_does(
    rows: list[tuple[str, float, str | None]], target: float
) -> None:
    predictions = [r[0] for r in rows]
    confidences = [r[1] for r in rows]
    expected = [r[2] for r in rows]

    def precision_at(threshold: float) -> float | None:
        answered = [p == e for p, c, e in rows if c >= threshold]
        return sum(answered) / len(answered) if answered else None

    calibration = calibrate_threshold(predictions, confidences, expected, target)
    if calibration.reached:
        reached = precision_at(calibration.threshold)
        assert reached is not None and reached >= target - 1e-12
        for lower in {c for c in confidences if c < calibration.threshold}:
            at_lower = precision_at(lower)
            assert at_lower is None or at_lower < target
    else:
        for threshold in set(confidences):
            at = precision_at(threshold)
            assert at is None or at < target


def test_wilson_bound_matches_the_textbook_value_and_tightens_with_more_answers() -> None:
    from trainer.evaluation.calibration import precision_bound

    # 90 right of 100 at 95% one-sided (z = 1.645): Wilson lower bound 0.8396.
    assert precision_bound(90, 100, 0.95) == pytest.approx(0.8396, abs=5e-4)
    assert precision_bound(900, 1000, 0.95) > precision_bound(90, 100, 0.95)
    assert precision_bound(9, 10, 0.0) == pytest.approx(0.9)


def test_a_confidence_bound_raises_the_threshold_to_where_precision_is_sure() -> None:
    # 40 answers: the 20 most confident all right, then one wrong in every 5.
    confidences = [1.0 - i / 100 for i in range(40)]
    predictions = ["a"] * 40
    expected = ["a" if i < 20 or i % 5 else "b" for i in range(40)]
    plain = calibrate_threshold(predictions, confidences, expected, 0.9)
    sure = calibrate_threshold(predictions, confidences, expected, 0.9, confidence=0.9)
    assert plain.precision is not None and plain.precision >= 0.9
    assert sure.threshold > plain.threshold
    assert sure.precision is not None and sure.precision > plain.precision
    with pytest.raises(ValueError, match="confidence"):
        calibrate_threshold(predictions, confidences, expected, 0.9, confidence=1.0)
