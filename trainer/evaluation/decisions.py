"""Decisions on embeddings: the searched queries and gallery, a rule's outcome, calibration.

Pure numpy, shared by the training pipeline (which calibrates the threshold it exports) and the
source-held-out protocol (which calibrates each fold's the same way and scores it):

* :class:`Embedded` holds unit embeddings with their landmark ids and names;
* :func:`searched` applies an :class:`~trainer.evaluation.expansion.Expansion` (DBA on the
  gallery, alpha-QE on the queries) as a deployment would;
* :func:`decide` is the decision rule of :mod:`schemas.vote` on every query, before and after
  its threshold;
* :func:`calibrate` picks the rule's threshold for a target precision on validation photos,
  open-set photos included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from schemas.vote import VoteSettings
from trainer.evaluation.calibration import Calibration, calibrate_threshold
from trainer.evaluation.expansion import NO_EXPANSION, Expansion
from trainer.evaluation.recognition import vote_accuracy


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


def searched(
    queries: Embedded, gallery: Embedded, expansion: Expansion = NO_EXPANSION
) -> tuple[Embedded, Embedded]:
    """The queries and the gallery as they are searched: the gallery database-side augmented,
    the queries alpha-expanded against that gallery, as :class:`Expansion` says."""
    if expansion == NO_EXPANSION:
        return queries, gallery
    expanded = dataclasses.replace(gallery, embeddings=expansion.gallery(gallery.embeddings))
    return (
        dataclasses.replace(
            queries, embeddings=expansion.queries(queries.embeddings, expanded.embeddings)
        ),
        expanded,
    )


def decide(queries: Embedded, gallery: Embedded, rule: VoteSettings) -> RuleOutcome:
    """The rule's winner and confidence for every query, and what it publishes at its threshold."""
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
    rule: VoteSettings,
    target_precision: float = 0.9,
    confidence: float = 0.0,
    expansion: Expansion = NO_EXPANSION,
) -> Calibration:
    """The rule's threshold for ``target_precision`` on validation photos of trained landmarks.

    The validation photos are searched in the whole gallery (right answer: their landmark); the
    photos of the ``holdout`` landmarks are searched again in the gallery without those
    landmarks' references (right answer: "no landmark"), as a photo of a landmark missing from
    the gallery would be. With an ``expansion``, each gallery is expanded as a deployment would
    expand it, and the queries against it.
    """
    full = decide(*searched(val, gallery, expansion), rule)
    predictions, confidences = list(full.predictions), list(full.confidences)
    expected: list[str | None] = list(val.landmark_ids)
    removed = set(holdout)
    if removed:
        open_set = val.subset([lm in removed for lm in val.landmark_ids])
        reduced_gallery = gallery.subset([lm not in removed for lm in gallery.landmark_ids])
        reduced = decide(*searched(open_set, reduced_gallery, expansion), rule)
        predictions += reduced.predictions
        confidences += list(reduced.confidences)
        expected += [None] * len(open_set)
    return calibrate_threshold(predictions, confidences, expected, target_precision, confidence)
