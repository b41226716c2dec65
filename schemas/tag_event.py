"""The tag event: what a worker publishes for each photo (topic ``landmark-tags``).

JSON, keyed by image id, described by ``schemas/json/tag-event.schema.json``. The landmark and
the neighbours it carries are the value types of :mod:`schemas.landmark`, re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from schemas.errors import schema_violation
from schemas.json_fields import (
    JsonObject,
    check_array,
    check_keys,
    check_number,
    check_object,
    check_text,
    check_timestamp,
    dump_json,
    load_json_object,
    optional_timestamp,
)
from schemas.kafka_record import KafkaRecord
from schemas.landmark import (
    ID_MAX_LENGTH,
    MAX_DISTANCE,
    NAME_MAX_LENGTH,
    Landmark,
    Neighbour,
    check_id,
)
from schemas.timestamps import format_rfc3339, require_utc

TAG_EVENT_SCHEMA_VERSION = "1"
TAG_EVENT_CONTENT_TYPE = "application/json"
DEFAULT_TAG_TOPIC = "landmark-tags"

# The value types a tag event is made of live in schemas.landmark; they are part of this contract.
__all__ = [
    "DEFAULT_TAG_TOPIC",
    "ID_MAX_LENGTH",
    "MAX_DISTANCE",
    "NAME_MAX_LENGTH",
    "TAG_EVENT_CONTENT_TYPE",
    "TAG_EVENT_SCHEMA_VERSION",
    "Landmark",
    "Neighbour",
    "TagEvent",
    "latency_ms_between",
]

_VERSION = re.compile(r"^[A-Za-z0-9._-]+$")

_REQUIRED_KEYS = (
    "schema_version",
    "image_id",
    "landmark",
    "confidence",
    "neighbours",
    "model_version",
    "gallery_version",
    "worker_id",
    "published_at",
    "tagged_at",
    "latency_ms",
    "trace_id",
)


@dataclass(frozen=True)
class TagEvent:
    """The outcome of tagging one photo.

    Attributes:
        image_id: The image id (the image event's key).
        landmark: The recognised landmark, or ``None`` when the vote is below threshold.
        confidence: Winning vote weight over total vote weight, in [0, 1].
        neighbours: The k nearest references, nearest first.
        model_version: The embedding model's version (its manifest's content hash).
        gallery_version: The reference gallery's version.
        worker_id: The worker that tagged the photo.
        published_at: When the photo was published (the ``published-at`` header), if known.
        tagged_at: When the tag was decided.
        latency_ms: ``tagged_at - published_at`` in milliseconds, if known.
        trace_id: The ``trace-id`` header passed through, if any.
        schema_version: The tag-event schema version.
    """

    image_id: str
    landmark: Landmark | None
    confidence: float
    neighbours: tuple[Neighbour, ...]
    model_version: str
    gallery_version: str
    worker_id: str
    published_at: datetime | None
    tagged_at: datetime
    latency_ms: float | None
    trace_id: str | None = None
    schema_version: str = TAG_EVENT_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != TAG_EVENT_SCHEMA_VERSION:
            raise schema_violation(
                f"tag event: schema_version {self.schema_version!r} is not "
                f"{TAG_EVENT_SCHEMA_VERSION!r}"
            )
        check_id(self.image_id, "tag event.image_id")
        if self.landmark is not None and not isinstance(self.landmark, Landmark):
            raise schema_violation("tag event.landmark: expected a Landmark or None")
        check_number(self.confidence, "tag event.confidence", minimum=0.0, maximum=1.0)
        if not isinstance(self.neighbours, tuple) or not all(
            isinstance(n, Neighbour) for n in self.neighbours
        ):
            raise schema_violation("tag event.neighbours: expected a tuple of Neighbour")
        check_text(self.model_version, "tag event.model_version", max_length=64, pattern=_VERSION)
        check_text(
            self.gallery_version, "tag event.gallery_version", max_length=64, pattern=_VERSION
        )
        check_text(self.worker_id, "tag event.worker_id", max_length=ID_MAX_LENGTH)
        if self.published_at is not None:
            object.__setattr__(
                self, "published_at", require_utc(self.published_at, "tag event.published_at")
            )
        object.__setattr__(self, "tagged_at", require_utc(self.tagged_at, "tag event.tagged_at"))
        if self.latency_ms is not None:
            check_number(self.latency_ms, "tag event.latency_ms", minimum=0.0)
        if self.trace_id is not None:
            check_text(self.trace_id, "tag event.trace_id", max_length=ID_MAX_LENGTH)

    def to_dict(self) -> JsonObject:
        """Return the JSON object for this event (every key present; absent values are null)."""
        return {
            "schema_version": self.schema_version,
            "image_id": self.image_id,
            "landmark": None if self.landmark is None else self.landmark.to_dict(),
            "confidence": float(self.confidence),
            "neighbours": [n.to_dict() for n in self.neighbours],
            "model_version": self.model_version,
            "gallery_version": self.gallery_version,
            "worker_id": self.worker_id,
            "published_at": optional_timestamp(self.published_at),
            "tagged_at": format_rfc3339(self.tagged_at),
            "latency_ms": None if self.latency_ms is None else float(self.latency_ms),
            "trace_id": self.trace_id,
        }

    def to_json_bytes(self) -> bytes:
        """Serialise as UTF-8 JSON that ``tag-event.schema.json`` accepts."""
        return dump_json(self.to_dict())

    def to_record(self) -> KafkaRecord:
        """Return the Kafka record to publish: key = image id, JSON value, typed headers."""
        return KafkaRecord(
            key=self.image_id.encode("utf-8"),
            value=self.to_json_bytes(),
            headers=(
                ("content-type", TAG_EVENT_CONTENT_TYPE.encode("ascii")),
                ("schema-version", self.schema_version.encode("ascii")),
            ),
        )

    @classmethod
    def from_dict(cls, document: object) -> TagEvent:
        """Build a tag event from its parsed JSON object, validating it against the schema.

        Args:
            document: The parsed JSON value.

        Returns:
            The event.

        Raises:
            InputError: ``schema_violation`` naming the first field that breaks the schema.
        """
        where = "tag event"
        obj = check_object(document, where)
        check_keys(obj, where, _REQUIRED_KEYS)
        version = check_text(obj["schema_version"], f"{where}.schema_version")
        if version != TAG_EVENT_SCHEMA_VERSION:
            raise schema_violation(f"{where}: unknown schema_version {version!r}")
        raw_landmark = obj["landmark"]
        landmark = None if raw_landmark is None else Landmark.from_dict(raw_landmark)
        neighbours = tuple(
            Neighbour.from_dict(item, f"{where}.neighbours[{i}]")
            for i, item in enumerate(check_array(obj["neighbours"], f"{where}.neighbours"))
        )
        published = obj["published_at"]
        latency = obj["latency_ms"]
        trace_id = obj["trace_id"]
        return cls(
            image_id=check_id(obj["image_id"], f"{where}.image_id"),
            landmark=landmark,
            confidence=check_number(
                obj["confidence"], f"{where}.confidence", minimum=0.0, maximum=1.0
            ),
            neighbours=neighbours,
            model_version=check_text(obj["model_version"], f"{where}.model_version"),
            gallery_version=check_text(obj["gallery_version"], f"{where}.gallery_version"),
            worker_id=check_text(obj["worker_id"], f"{where}.worker_id"),
            published_at=None
            if published is None
            else check_timestamp(published, f"{where}.published_at"),
            tagged_at=check_timestamp(obj["tagged_at"], f"{where}.tagged_at"),
            latency_ms=None
            if latency is None
            else check_number(latency, f"{where}.latency_ms", minimum=0.0),
            trace_id=None if trace_id is None else check_text(trace_id, f"{where}.trace_id"),
        )

    @classmethod
    def from_json_bytes(cls, data: bytes) -> TagEvent:
        """Parse and validate a tag event.

        Args:
            data: UTF-8 JSON bytes.

        Returns:
            The event.

        Raises:
            InputError: ``schema_violation`` for bad JSON or a document that breaks the schema.
        """
        return cls.from_dict(load_json_object(data, "tag event"))


def latency_ms_between(published_at: datetime | None, tagged_at: datetime) -> float | None:
    """Milliseconds from publishing to tagging, clamped at 0 for clock skew; ``None`` if unknown.

    Args:
        published_at: When the photo was published, if known.
        tagged_at: When it was tagged.

    Returns:
        The latency in ms, or ``None``.
    """
    if published_at is None:
        return None
    delta = require_utc(tagged_at, "tagged_at") - require_utc(published_at, "published_at")
    return max(0.0, delta.total_seconds() * 1000.0)
