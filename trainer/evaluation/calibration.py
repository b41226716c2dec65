"""Calibrating the "no landmark" threshold for a target precision.

The decision rule (:mod:`schemas.vote`) gives every query a winner and a confidence that does not
depend on the threshold; the published answer is the winner when its confidence reaches the
threshold and "no landmark" otherwise. :func:`calibrate_threshold` picks, on validation queries,
the lowest threshold whose answered queries reach the target precision: the most photos tagged
for that precision. The threshold goes into the model manifest, so the worker publishes exactly
what was calibrated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

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
    confidence: float = 0.0,
) -> Calibration:
    """The lowest threshold at which the answered queries reach ``target_precision``.

    With ``confidence`` > 0 the precision must reach the target with that one-sided confidence:
    the lower Wilson score bound of the answered queries' precision is held to the target, not
    the precision itself. The calibration photos are a finite sample; a threshold set where
    their precision just touches the target lands below it about half of the time on new
    photos, and more often on photos unlike the calibration ones.

    Args:
        predictions: The unthresholded winner of each query (None when there was none).
        confidences: Each winner's confidence.
        expected: The right answer of each query (None: the query's landmark is not in the
            gallery, so any landmark published for it is wrong).
        target_precision: The precision to reach, in (0, 1].
        confidence: The one-sided confidence of the precision bound, in [0, 1) (0: none).

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
    if not 0.0 <= confidence < 1.0:
        raise ValueError(f"calibration confidence must be in [0, 1), got {confidence}")
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
        if precision_bound(cumulative_right[end], counts[end], confidence) >= target_precision:
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


def precision_bound(right: int, answered: int, confidence: float) -> float:
    """The lower one-sided Wilson score bound of ``right / answered`` at ``confidence``
    (``confidence`` 0: the ratio itself)."""
    if answered <= 0:
        return 0.0
    share = right / answered
    if confidence <= 0.0:
        return share
    z = NormalDist().inv_cdf(confidence)
    z2 = z * z
    centre = share + z2 / (2 * answered)
    spread = z * math.sqrt(share * (1 - share) / answered + z2 / (4 * answered * answered))
    return (centre - spread) / (1 + z2 / answered)
