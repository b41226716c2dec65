"""Milvus search hits as the :class:`~schemas.tag_event.Neighbour` lists the vote reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schemas.gallery import (
    FIELD_LANDMARK_ID,
    FIELD_LANDMARK_NAME,
    FIELD_REFERENCE_ID,
    cosine_to_squared_l2,
)
from schemas.tag_event import Neighbour


def distance_of(score: float, metric: str) -> float:
    """Milvus's score for a hit as the squared Euclidean distance of unit vectors (0…4).

    COSINE and IP return a similarity (``2 - 2 s``); Milvus's L2 is already squared.
    """
    if metric == "L2":
        return min(4.0, max(0.0, float(score)))
    return cosine_to_squared_l2(score)


def neighbours_from_hits(hits: Sequence[Mapping[str, Any]], metric: str) -> list[Neighbour]:
    """Convert one query's Milvus hits to neighbours sorted by distance (then reference id).

    Args:
        hits: the hits of one query, each ``{"id"|"reference_id", "distance", "entity": {...}}``.
        metric: the collection's metric.

    Returns:
        The neighbours, nearest first.
    """
    neighbours = []
    for hit in hits:
        entity = hit.get("entity") or {}
        reference_id = hit.get(FIELD_REFERENCE_ID, hit.get("id"))
        neighbours.append(
            Neighbour(
                reference_id=str(reference_id),
                landmark_id=str(entity[FIELD_LANDMARK_ID]),
                landmark_name=str(entity[FIELD_LANDMARK_NAME]),
                distance=distance_of(float(hit["distance"]), metric),
            )
        )
    neighbours.sort(key=lambda n: (n.distance, n.reference_id))
    return neighbours
