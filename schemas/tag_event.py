"""The tag event: what a worker publishes for each photo (topic ``landmark-tags``).

JSON, keyed by image id, described by ``schemas/json/tag-event.schema.json``.
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
from schemas.timestamps import format_rfc3339, require_utc

TAG_EVENT_SCHEMA_VERSION = "1"
TAG_EVENT_CONTENT_TYPE = "application/json"
DEFAULT_TAG_TOPIC = "landmark-tags"

ID_MAX_LENGTH = 256
NAME_MAX_LENGTH = 256
#: Squared Euclidean distance between unit vectors lies in [0, 4].
MAX_DISTANCE = 4.0

_VERSION = re.compile(r"^[A-Za-z0-9._-]+$")


def _check_id(value: object, where: str) -> str:
    return check_text(value, where, max_length=ID_MAX_LENGTH)


@dataclass(frozen=True)
class Landmark:
    """A recognised landmark.

    Attributes:
        landmark_id: Stable identifier (e.g. the folder name or a Google-Landmarks id).
        name: Human-readable name.
    """

    landmark_id: str
    name: str

    def __post_init__(self) -> None:
        _check_id(self.landmark_id, "landmark.landmark_id")
        check_text(self.name, "landmark.name", max_length=NAME_MAX_LENGTH)

    def to_dict(self) -> JsonObject:
        """Return the JSON object for this landmark."""
        return {"landmark_id": self.landmark_id, "name": self.name}

    @classmethod
    def from_dict(cls, document: object, where: str = "landmark") -> Landmark:
        """Build a landmark from its JSON object.

        Args:
            document: The parsed JSON value.
            where: Its path, for error messages.

        Returns:
            The landmark.

        Raises:
            InputError: ``schema_violation`` when the object breaks the schema.
        """
        obj = check_object(document, where)
        check_keys(obj, where, ("landmark_id", "name"))
        return cls(
            landmark_id=_check_id(obj["landmark_id"], f"{where}.landmark_id"),
            name=check_text(obj["name"], f"{where}.name", max_length=NAME_MAX_LENGTH),
        )


@dataclass(frozen=True)
class Neighbour:
    """One reference photo found near the query.

    Attributes:
        reference_id: The reference photo's id in the gallery.
        landmark_id: The landmark the reference shows.
        landmark_name: That landmark's name.
        distance: Squared Euclidean distance between unit embeddings, in [0, 4].
    """

    reference_id: str
    landmark_id: str
    landmark_name: str
    distance: float

    def __post_init__(self) -> None:
        _check_id(self.reference_id, "neighbour.reference_id")
        _check_id(self.landmark_id, "neighbour.landmark_id")
        check_text(self.landmark_name, "neighbour.landmark_name", max_length=NAME_MAX_LENGTH)
        check_number(self.distance, "neighbour.distance", minimum=0.0, maximum=MAX_DISTANCE)

    @property
    def landmark(self) -> Landmark:
        """The landmark this reference shows."""
        return Landmark(self.landmark_id, self.landmark_name)

    def to_dict(self) -> JsonObject:
        """Return the JSON object for this neighbour."""
        return {
            "reference_id": self.reference_id,
            "landmark_id": self.landmark_id,
            "landmark_name": self.landmark_name,
            "distance": float(self.distance),
        }

    @classmethod
    def from_dict(cls, document: object, where: str = "neighbour") -> Neighbour:
        """Build a neighbour from its JSON object.

        Args:
            document: The parsed JSON value.
            where: Its path, for error messages.

        Returns:
            The neighbour.

        Raises:
            InputError: ``schema_violation`` when the object breaks the schema.
        """
        obj = check_object(document, where)
        check_keys(obj, where, ("reference_id", "landmark_id", "landmark_name", "distance"))
        return cls(
            reference_id=_check_id(obj["reference_id"], f"{where}.reference_id"),
            landmark_id=_check_id(obj["landmark_id"], f"{where}.landmark_id"),
            landmark_name=check_text(
                obj["landmark_name"], f"{where}.landmark_name", max_length=NAME_MAX_LENGTH
            ),
            distance=check_number(
                obj["distance"], f"{where}.distance", minimum=0.0, maximum=MAX_DISTANCE
            ),
        )


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
        _check_id(self.image_id, "tag event.image_id")
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
            image_id=_check_id(obj["image_id"], f"{where}.image_id"),
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
