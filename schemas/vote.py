"""The decision rule that turns the nearest references into a landmark, or "no landmark".

Two rules, shared by the trainer's evaluation and the worker, so that evaluation measures exactly
what the worker publishes:

- ``margin`` (the default of new exports): the landmark of the nearest reference wins; its
  confidence grows with the margin between its best cosine similarity and the best similarity of
  any *other* landmark among the k nearest (or the k-th neighbour's, when no other landmark is
  among them). It suits galleries with few references a landmark: a landmark with 3 references
  is not outvoted by one with 100, and the confidence is a continuous score that ranks photos
  (good GAP) instead of a count of agreeing neighbours.
- ``weighted_knn`` (the paper's kNN vote, the rule of exports made before ``rule`` existed):
  each of the k nearest adds a weight to its landmark; confidence = winner's weight / total.

The threshold below which the answer is "no landmark" is calibrated on validation photos for a
target precision at training time and stored in the model manifest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from schemas.errors import schema_violation
from schemas.json_fields import JsonObject, check_integer, check_keys, check_number, check_object
from schemas.landmark import Landmark, Neighbour

Weighting = Literal["uniform", "inverse_rank", "similarity"]
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)
Rule = Literal["margin", "weighted_knn"]
RULES: tuple[str, ...] = get_args(Rule)
#: The rule of a manifest written before the ``rule`` key existed.
LEGACY_RULE: Rule = "weighted_knn"
#: Cosine margin at which the ``margin`` rule's confidence reaches 1 - 1/e (about 0.63):
#: confidence = 1 - exp(-margin / MARGIN_SCALE), so 0.05 → 0.39, 0.1 → 0.63, 0.2 → 0.86.
MARGIN_SCALE = 0.1

#: Added to every similarity weight so that a neighbour at distance >= 2 (cosine <= 0) still
#: counts a little and the total weight is never zero.
SIMILARITY_EPSILON = 1e-6
MAX_K = 1024


@dataclass(frozen=True)
class VoteSettings:
    """How the nearest references decide.

    Attributes:
        k: How many nearest neighbours are searched and considered.
        weighting: For ``weighted_knn``: ``uniform`` (1 each), ``inverse_rank`` (1/(rank+1),
            rank from 0) or ``similarity`` (max(cosine, 0) + epsilon, with cosine = 1 - d/2 for
            squared-L2 d between unit vectors). Ignored by ``margin``.
        threshold: Below this confidence the decision is "no landmark".
        rule: ``margin`` or ``weighted_knn`` (see the module docstring).
    """

    k: int = 10
    weighting: Weighting = "similarity"
    threshold: float = 0.5
    rule: Rule = "margin"

    def __post_init__(self) -> None:
        check_integer(self.k, "vote.k", minimum=1, maximum=MAX_K)
        if self.weighting not in WEIGHTINGS:
            raise schema_violation(
                f"vote.weighting: {self.weighting!r} is not one of {', '.join(WEIGHTINGS)}"
            )
        check_number(self.threshold, "vote.threshold", minimum=0.0, maximum=1.0)
        if self.rule not in RULES:
            raise schema_violation(f"vote.rule: {self.rule!r} is not one of {', '.join(RULES)}")

    def to_dict(self) -> JsonObject:
        """Return the JSON object for these settings."""
        return {
            "k": self.k,
            "weighting": self.weighting,
            "threshold": float(self.threshold),
            "rule": self.rule,
        }

    @classmethod
    def from_dict(cls, document: object, where: str = "vote") -> VoteSettings:
        """Build settings from their JSON object.

        Args:
            document: The parsed JSON value.
            where: Its path, for error messages.

        Returns:
            The settings.

        Raises:
            InputError: ``schema_violation`` when the object breaks the schema.
        """
        obj = check_object(document, where)
        check_keys(obj, where, ("k", "weighting", "threshold"), optional=("rule",))
        weighting: Any = obj["weighting"]
        if weighting not in WEIGHTINGS:
            raise schema_violation(f"{where}.weighting: {weighting!r} is not one of {WEIGHTINGS}")
        rule: Any = obj.get("rule", LEGACY_RULE)
        if rule not in RULES:
            raise schema_violation(f"{where}.rule: {rule!r} is not one of {RULES}")
        return cls(
            rule=rule,
            k=check_integer(obj["k"], f"{where}.k", minimum=1, maximum=MAX_K),
            weighting=weighting,
            threshold=check_number(
                obj["threshold"], f"{where}.threshold", minimum=0.0, maximum=1.0
            ),
        )


def _weight(neighbour: Neighbour, rank: int, weighting: Weighting) -> float:
    if weighting == "uniform":
        return 1.0
    if weighting == "inverse_rank":
        return 1.0 / (rank + 1)
    cosine = 1.0 - neighbour.distance / 2.0
    return max(cosine, 0.0) + SIMILARITY_EPSILON


def nearest_first(neighbours: Sequence[Neighbour]) -> list[Neighbour]:
    """Sort neighbours by distance, breaking ties by landmark id, reference id, landmark name.

    The vote sees neighbours in this order, so its decision does not depend on the order in
    which an index returned equally distant references.

    Args:
        neighbours: Neighbours in any order.

    Returns:
        A new list, nearest first.
    """
    return sorted(
        neighbours, key=lambda n: (n.distance, n.landmark_id, n.reference_id, n.landmark_name)
    )


def decide_landmark(
    neighbours: Sequence[Neighbour], settings: VoteSettings
) -> tuple[Landmark | None, float]:
    """Decide the landmark of one photo from its nearest references.

    Args:
        neighbours: The search results for one photo, in any order.
        settings: rule, k, weighting and threshold.

    Returns:
        ``(landmark, confidence)``; ``(None, confidence)`` when confidence is below the
        threshold, and ``(None, 0.0)`` when there are no neighbours. The winner and the
        confidence do not depend on the threshold.
    """
    voters = nearest_first(neighbours)[: settings.k]
    if not voters:
        return None, 0.0
    if settings.rule == "margin":
        winner, confidence = _margin_decision(voters)
    else:
        winner, confidence = _weighted_knn_decision(voters, settings.weighting)
    if confidence < settings.threshold:
        return None, confidence
    return winner, confidence


def similarity_of(neighbour: Neighbour) -> float:
    """Cosine similarity of a neighbour (``1 - d/2`` for squared-L2 ``d`` between unit vectors)."""
    return 1.0 - neighbour.distance / 2.0


def margin_confidence(margin: float) -> float:
    """The ``margin`` rule's confidence for a cosine margin: ``1 - exp(-margin / MARGIN_SCALE)``."""
    return float(min(1.0, max(0.0, 1.0 - math.exp(-max(margin, 0.0) / MARGIN_SCALE))))


def _margin_decision(voters: Sequence[Neighbour]) -> tuple[Landmark, float]:
    """Nearest landmark wins; confidence from its margin over the best other landmark.

    Voters are nearest first, so the first is the winner's best reference and the first voter of
    another landmark is that landmark's best. When no other landmark is among the voters, the
    last voter's similarity bounds every other landmark's from above and stands in for it.
    """
    best = voters[0]
    runner_up = next((n for n in voters if n.landmark_id != best.landmark_id), voters[-1])
    if runner_up is best:
        # One neighbour only: nothing to compare with.
        return Landmark(best.landmark_id, best.landmark_name), 0.0
    margin = similarity_of(best) - similarity_of(runner_up)
    return Landmark(best.landmark_id, best.landmark_name), margin_confidence(margin)


def _weighted_knn_decision(
    voters: Sequence[Neighbour], weighting: Weighting
) -> tuple[Landmark, float]:
    """The paper's vote: the landmark with the largest total weight among the k nearest."""
    weight_of: dict[str, float] = {}
    best_distance: dict[str, float] = {}
    name_of: dict[str, str] = {}
    for rank, neighbour in enumerate(voters):
        landmark_id = neighbour.landmark_id
        weight_of[landmark_id] = weight_of.get(landmark_id, 0.0) + _weight(
            neighbour, rank, weighting
        )
        if landmark_id not in best_distance:
            # Voters are nearest first, so the first one seen is the landmark's best.
            best_distance[landmark_id] = neighbour.distance
            name_of[landmark_id] = neighbour.landmark_name
    winner = min(weight_of, key=lambda lid: (-weight_of[lid], best_distance[lid], lid))
    total = sum(weight_of.values())
    return Landmark(winner, name_of[winner]), min(1.0, weight_of[winner] / total)
