"""Calibrating the "no landmark" threshold for a target precision.

The decision rule (:mod:`schemas.vote`) gives every query a winner and a confidence that does not
depend on the threshold; the published answer is the winner when its confidence reaches the
threshold and "no landmark" otherwise. :func:`calibrate_threshold` picks, on validation queries,
the lowest threshold whose answered queries reach the target precision: the most photos tagged
for that precision. The threshold goes into the model manifest, so the worker publishes exactly
what was calibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_TARGET_PRECISION = 0.9


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and what it gave on the calibration queries.

    Attributes:
        threshold: The lowest confidence that is published as a landmark.
        target_precision: The precision asked for.
        precision: Precision of the answered calibration queries at ``threshold`` (None when none
            is answered).
        coverage: Share of calibration queries answered with a landmark.
        queries: How many calibration queries there were.
        reached: Whether the target precision was reached with at least one answer.
    """

    threshold: float
    target_precision: float
    precision: float | None
    coverage: float
    queries: int
    reached: bool

    def to_dict(self) -> dict[str, object]:
        """The calibration as a JSON object (for the manifest's evaluation)."""
        return {
            "threshold": self.threshold,
            "target_precision": self.target_precision,
            "precision": self.precision,
            "coverage": self.coverage,
            "queries": self.queries,
            "reached": self.reached,
        }


def calibrate_threshold(
    predictions: Sequence[str | None],
    confidences: Sequence[float],
    expected: Sequence[str | None],
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> Calibration:
    """The lowest threshold at which the answered queries reach ``target_precision``.

    Args:
        predictions: The unthresholded winner of each query (None when there was none).
        confidences: Each winner's confidence.
        expected: The right answer of each query (None: the query's landmark is not in the
            gallery, so any landmark published for it is wrong).
        target_precision: The precision to reach, in (0, 1].

    Returns:
        The calibration. When no threshold reaches the target, the threshold is just above the
        highest confidence (nothing is published) and ``reached`` is False.

    Raises:
        ValueError: lengths disagree, no query, or a target outside (0, 1].
    """
    if not len(predictions) == len(confidences) == len(expected):
        raise ValueError(
            f"{len(predictions)} predictions, {len(confidences)} confidences, "
            f"{len(expected)} expected answers"
        )
    if not predictions:
        raise ValueError("no calibration queries")
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    scores = np.asarray(
        [c if p is not None else -np.inf for p, c in zip(predictions, confidences, strict=True)],
        dtype=np.float64,
    )
    right = np.asarray(
        [p is not None and p == e for p, e in zip(predictions, expected, strict=True)], dtype=bool
    )
    order = np.argsort(-scores, kind="stable")
    scores, right = scores[order], right[order]
    answerable = np.isfinite(scores)
    cumulative_right = np.cumsum(right)
    counts = np.arange(1, len(scores) + 1)
    best: int | None = None
    # A threshold t publishes every query with confidence >= t: only cut after the last of a run
    # of equal confidences.
    for end in range(len(scores)):
        if not answerable[end]:
            break
        if end + 1 < len(scores) and scores[end + 1] == scores[end]:
            continue
        if cumulative_right[end] / counts[end] >= target_precision:
            best = end
    total = len(scores)
    if best is None:
        top = float(scores[0]) if answerable[0] else 0.0
        return Calibration(
            threshold=min(1.0, float(np.nextafter(top, np.inf))),
            target_precision=target_precision,
            precision=None,
            coverage=0.0,
            queries=total,
            reached=False,
        )
    return Calibration(
        threshold=float(scores[best]),
        target_precision=target_precision,
        precision=float(cumulative_right[best] / counts[best]),
        coverage=float(counts[best] / total),
        queries=total,
        reached=True,
    )
