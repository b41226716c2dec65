"""The k-nearest-neighbour vote that turns neighbours into a landmark decision.

Shared by the trainer's evaluation and the worker, so that evaluation measures exactly what the
worker publishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from schemas.errors import schema_violation
from schemas.json_fields import JsonObject, check_integer, check_keys, check_number, check_object
from schemas.tag_event import Landmark, Neighbour

Weighting = Literal["uniform", "inverse_rank", "similarity"]
WEIGHTINGS: tuple[str, ...] = get_args(Weighting)

#: Added to every similarity weight so that a neighbour at distance >= 2 (cosine <= 0) still
#: counts a little and the total weight is never zero.
SIMILARITY_EPSILON = 1e-6
MAX_K = 1024


@dataclass(frozen=True)
class VoteSettings:
    """How the vote weighs the neighbours.

    Attributes:
        k: How many nearest neighbours vote.
        weighting: ``uniform`` (1 each), ``inverse_rank`` (1/(rank+1), rank from 0) or
            ``similarity`` (max(cosine, 0) + epsilon, with cosine = 1 - d/2 for squared-L2 d
            between unit vectors).
        threshold: Below this confidence the decision is "no landmark".
    """

    k: int = 5
    weighting: Weighting = "similarity"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        check_integer(self.k, "vote.k", minimum=1, maximum=MAX_K)
        if self.weighting not in WEIGHTINGS:
            raise schema_violation(
                f"vote.weighting: {self.weighting!r} is not one of {', '.join(WEIGHTINGS)}"
            )
        check_number(self.threshold, "vote.threshold", minimum=0.0, maximum=1.0)

    def to_dict(self) -> JsonObject:
        """Return the JSON object for these settings."""
        return {"k": self.k, "weighting": self.weighting, "threshold": float(self.threshold)}

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
        check_keys(obj, where, ("k", "weighting", "threshold"))
        weighting: Any = obj["weighting"]
        if weighting not in WEIGHTINGS:
            raise schema_violation(f"{where}.weighting: {weighting!r} is not one of {WEIGHTINGS}")
        return cls(
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
    """Vote over the k nearest neighbours.

    Each of the first k neighbours (nearest first) adds its weight to its landmark. The winner has
    the largest total weight; ties go to the landmark with the smaller best distance, then to the
    smaller landmark id. Confidence is the winner's weight over the total weight of the k voters.

    Args:
        neighbours: The search results for one photo, in any order.
        settings: k, weighting and threshold.

    Returns:
        ``(landmark, confidence)``; ``(None, confidence)`` when confidence is below the
        threshold, and ``(None, 0.0)`` when there are no neighbours.
    """
    voters = nearest_first(neighbours)[: settings.k]
    if not voters:
        return None, 0.0
    weight_of: dict[str, float] = {}
    best_distance: dict[str, float] = {}
    name_of: dict[str, str] = {}
    for rank, neighbour in enumerate(voters):
        landmark_id = neighbour.landmark_id
        weight_of[landmark_id] = weight_of.get(landmark_id, 0.0) + _weight(
            neighbour, rank, settings.weighting
        )
        if landmark_id not in best_distance:
            # Voters are nearest first, so the first one seen is the landmark's best.
            best_distance[landmark_id] = neighbour.distance
            name_of[landmark_id] = neighbour.landmark_name
    winner = min(weight_of, key=lambda lid: (-weight_of[lid], best_distance[lid], lid))
    total = sum(weight_of.values())
    confidence = min(1.0, weight_of[winner] / total)
    if confidence < settings.threshold:
        return None, confidence
    return Landmark(winner, name_of[winner]), confidence
