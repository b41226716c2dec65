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
from trainer.evaluation.decisions import (
    Embedded,
    RuleOutcome,
    decide,
    searched,
)
from trainer.evaluation.expansion import NO_EXPANSION, Expansion
from trainer.evaluation.recognition import gap
from trainer.evaluation.retrieval import first_hit_ranks

MARGIN_RULE = VoteSettings(rule="margin", k=10)
LEGACY_RULE = VoteSettings(rule="weighted_knn", k=5, weighting="similarity", threshold=0.5)
DEFAULT_KS = (1, 5, 10)


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


def score_queries(
    queries: Embedded,
    gallery: Embedded,
    threshold: float,
    ks: Sequence[int] = DEFAULT_KS,
    expansion: Expansion = NO_EXPANSION,
) -> QueryOutcomes:
    """Each query's outcome against the gallery: ranks to ``max(ks)``, the margin rule at
    ``threshold``, the legacy vote at its own threshold (both searched after ``expansion``)."""
    known = set(gallery.landmark_ids)
    queries, gallery = searched(queries, gallery, expansion)
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
        margin=decide(queries, gallery, dataclasses.replace(MARGIN_RULE, threshold=threshold)),
        legacy=decide(queries, gallery, LEGACY_RULE),
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
