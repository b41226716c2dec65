"""Scoring a fold's queries against its gallery: hit@k, the decision rules, calibration, GAP.

Pure numpy on embeddings. Every query keeps its own outcome (first-hit rank, each rule's
unthresholded winner and confidence, what is published at the rule's threshold), so folds are
pooled by concatenating queries, and figures are computed the same way for a fold and for a pool.

Two decision rules are scored: the ``margin`` rule at a threshold calibrated on the fold's
validation photos for a target precision, and the legacy ``weighted_knn`` vote at its fixed
threshold, for comparison.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.vote import VoteSettings
from trainer.evaluation.calibration import Calibration, calibrate_threshold
from trainer.evaluation.recognition import gap, vote_accuracy
from trainer.evaluation.retrieval import first_hit_ranks

MARGIN_RULE = VoteSettings(rule="margin", k=10)
LEGACY_RULE = VoteSettings(rule="weighted_knn", k=5, weighting="similarity", threshold=0.5)
DEFAULT_KS = (1, 5, 10)


@dataclass(frozen=True)
class Embedded:
    """Unit embeddings of photos with their landmark ids and names."""

    embeddings: np.ndarray
    landmark_ids: tuple[str, ...]
    landmark_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.landmark_ids)

    def subset(self, keep: Sequence[bool]) -> Embedded:
        """The rows where ``keep`` is true."""
        mask = np.asarray(keep, dtype=bool)
        return Embedded(
            self.embeddings[mask],
            tuple(i for i, k in zip(self.landmark_ids, mask, strict=True) if k),
            tuple(n for n, k in zip(self.landmark_names, mask, strict=True) if k),
        )


@dataclass(frozen=True)
class RuleOutcome:
    """One decision rule on a set of queries."""

    predictions: tuple[str | None, ...]
    confidences: np.ndarray
    published: tuple[str | None, ...]

    @staticmethod
    def concatenate(outcomes: Sequence[RuleOutcome]) -> RuleOutcome:
        return RuleOutcome(
            tuple(p for o in outcomes for p in o.predictions),
            np.concatenate([o.confidences for o in outcomes]),
            tuple(p for o in outcomes for p in o.published),
        )


@dataclass(frozen=True)
class QueryOutcomes:
    """Per query: right answer, rank of the first reference of it (0: none within the depth), and
    each rule's outcome."""

    expected: tuple[str | None, ...]
    ranks: np.ndarray
    margin: RuleOutcome
    legacy: RuleOutcome
    thresholds: tuple[float, ...] = ()

    @staticmethod
    def concatenate(outcomes: Sequence[QueryOutcomes]) -> QueryOutcomes:
        """The queries of several folds as one set (query-weighted pooling)."""
        return QueryOutcomes(
            tuple(e for o in outcomes for e in o.expected),
            np.concatenate([o.ranks for o in outcomes]),
            RuleOutcome.concatenate([o.margin for o in outcomes]),
            RuleOutcome.concatenate([o.legacy for o in outcomes]),
            tuple(t for o in outcomes for t in o.thresholds),
        )


def _decide(queries: Embedded, gallery: Embedded, rule: VoteSettings) -> RuleOutcome:
    report = vote_accuracy(
        queries.embeddings,
        queries.landmark_ids,
        gallery.embeddings,
        gallery.landmark_ids,
        gallery.landmark_names,
        dataclasses.replace(rule, threshold=0.0),
        thresholds=(),
    )
    confidences = np.asarray(report.confidences, dtype=np.float64)
    # decide_landmark's contract: below the threshold the answer is None, the winner unchanged.
    published = tuple(
        p if c >= rule.threshold else None
        for p, c in zip(report.predictions, confidences, strict=True)
    )
    return RuleOutcome(tuple(report.predictions), confidences, published)


def calibrate(
    val: Embedded,
    gallery: Embedded,
    holdout: Sequence[str],
    rule: VoteSettings = MARGIN_RULE,
    target_precision: float = 0.9,
) -> Calibration:
    """The rule's threshold for ``target_precision`` on validation photos of trained landmarks.

    The validation photos are searched in the whole gallery (right answer: their landmark); the
    photos of the ``holdout`` landmarks are searched again in the gallery without those
    landmarks' references (right answer: "no landmark"), as a photo of a landmark missing from
    the gallery would be.
    """
    full = _decide(val, gallery, rule)
    predictions, confidences = list(full.predictions), list(full.confidences)
    expected: list[str | None] = list(val.landmark_ids)
    removed = set(holdout)
    if removed:
        open_set = val.subset([lm in removed for lm in val.landmark_ids])
        reduced = _decide(
            open_set, gallery.subset([lm not in removed for lm in gallery.landmark_ids]), rule
        )
        predictions += reduced.predictions
        confidences += list(reduced.confidences)
        expected += [None] * len(open_set)
    return calibrate_threshold(predictions, confidences, expected, target_precision)


def score_queries(
    queries: Embedded,
    gallery: Embedded,
    threshold: float,
    ks: Sequence[int] = DEFAULT_KS,
) -> QueryOutcomes:
    """Each query's outcome against the gallery: ranks to ``max(ks)``, the margin rule at
    ``threshold``, the legacy vote at its own threshold."""
    known = set(gallery.landmark_ids)
    ranks = first_hit_ranks(
        queries.embeddings,
        queries.landmark_ids,
        gallery.embeddings,
        gallery.landmark_ids,
        max_rank=max(ks),
    )
    return QueryOutcomes(
        expected=tuple(lm if lm in known else None for lm in queries.landmark_ids),
        ranks=ranks,
        margin=_decide(queries, gallery, dataclasses.replace(MARGIN_RULE, threshold=threshold)),
        legacy=_decide(queries, gallery, LEGACY_RULE),
        thresholds=(threshold,) * len(queries),
    )


def decision_figures(outcome: RuleOutcome, expected: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy, precision (None when nothing is published), unknown rate and GAP of one rule."""
    published = outcome.published
    answered = [(p, e) for p, e in zip(published, expected, strict=True) if p is not None]
    right = sum(p == e for p, e in answered)
    has_truth = any(e is not None for e in expected)
    return {
        "accuracy": right / len(published),
        "precision": right / len(answered) if answered else None,
        "unknown_rate": 1.0 - len(answered) / len(published),
        "gap": gap(outcome.predictions, list(outcome.confidences), expected) if has_truth else None,
    }


def group_figures(outcomes: QueryOutcomes, ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
    """hit@k and both rules' figures for a set of queries (a fold's group or a pool)."""
    hits = outcomes.ranks > 0
    thresholds = sorted(set(outcomes.thresholds))
    return {
        "queries": len(outcomes.expected),
        "hit_at_k": {str(k): float(np.mean(hits & (outcomes.ranks <= k))) for k in ks},
        "margin": {
            **decision_figures(outcomes.margin, outcomes.expected),
            "thresholds": thresholds,
        },
        "legacy": {
            **decision_figures(outcomes.legacy, outcomes.expected),
            "threshold": LEGACY_RULE.threshold,
        },
    }
