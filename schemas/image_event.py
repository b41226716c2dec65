"""The image event (topic ``images``): an encoded photo, or a reference to one stored elsewhere.

Key = image id (UTF-8). Headers ``content-type`` and ``schema-version`` are required;
``published-at`` (RFC 3339 UTC), ``source`` and ``trace-id`` are optional. The value is either the
encoded photo itself (``content-type`` ``image/*`` or ``application/octet-stream``) or, with
``content-type`` ``application/json``, a reference ``{"image_id": ..., "uri": ...}`` described by
``schemas/json/image-reference.schema.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from schemas.errors import schema_violation
from schemas.json_fields import check_keys, check_text, dump_json, load_json_object
from schemas.kafka_record import KafkaRecord
from schemas.timestamps import format_rfc3339, parse_rfc3339, require_utc

IMAGE_EVENT_SCHEMA_VERSION = "1"
DEFAULT_IMAGE_TOPIC = "images"

HEADER_CONTENT_TYPE = "content-type"
HEADER_SCHEMA_VERSION = "schema-version"
HEADER_PUBLISHED_AT = "published-at"
HEADER_SOURCE = "source"
HEADER_TRACE_ID = "trace-id"

REFERENCE_CONTENT_TYPE = "application/json"
#: Content type for inline photos whose format the publisher does not know.
OCTET_STREAM = "application/octet-stream"

IMAGE_ID_MAX_LENGTH = 256
URI_MAX_LENGTH = 2048
HEADER_TEXT_MAX_LENGTH = 256
#: Printable text without control characters: ids end up in logs, file names and metrics.
IMAGE_ID_PATTERN = re.compile(r"^[^\x00-\x1f\x7f]+$")
URI_PATTERN = re.compile(r"^(file|https?)://[^\x00-\x20\x7f]+$")
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+$")


def _check_image_id(value: object, where: str) -> str:
    return check_text(value, where, max_length=IMAGE_ID_MAX_LENGTH, pattern=IMAGE_ID_PATTERN)


def _check_optional_header_text(value: str | None, where: str) -> None:
    if value is not None:
        check_text(value, where, max_length=HEADER_TEXT_MAX_LENGTH, pattern=IMAGE_ID_PATTERN)


@dataclass(frozen=True)
class InlinePhoto:
    """An image event carrying the encoded photo.

    Attributes:
        image_id: The image id (the record key).
        data: The encoded photo; its format is detected from the bytes, not the content type.
        content_type: ``image/<subtype>`` or ``application/octet-stream``.
        published_at: When the photo was published, if the publisher said.
        source: Free-form origin (e.g. the publishing system), if any.
        trace_id: Correlation id passed through to the tag event, if any.
    """

    image_id: str
    data: bytes
    content_type: str = OCTET_STREAM
    published_at: datetime | None = None
    source: str | None = None
    trace_id: str | None = None

    def __post_init__(self) -> None:
        _check_image_id(self.image_id, "image event.image_id")
        if not isinstance(self.data, bytes) or not self.data:
            raise schema_violation("image event: the photo must be non-empty bytes")
        _check_inline_content_type(self.content_type)
        _normalise_common(self)


@dataclass(frozen=True)
class PhotoReference:
    """An image event pointing at a photo stored elsewhere.

    Attributes:
        image_id: The image id (the record key, repeated in the JSON value).
        uri: ``file://`` (under a configured root) or ``http(s)://`` (to configured hosts) URI.
        published_at: When the photo was published, if the publisher said.
        source: Free-form origin, if any.
        trace_id: Correlation id passed through to the tag event, if any.
    """

    image_id: str
    uri: str
    published_at: datetime | None = None
    source: str | None = None
    trace_id: str | None = None

    def __post_init__(self) -> None:
        _check_image_id(self.image_id, "image event.image_id")
        check_text(self.uri, "image reference.uri", max_length=URI_MAX_LENGTH, pattern=URI_PATTERN)
        _normalise_common(self)


ImageEvent = InlinePhoto | PhotoReference


def _normalise_common(event: InlinePhoto | PhotoReference) -> None:
    if event.published_at is not None:
        utc = require_utc(event.published_at, "image event.published_at")
        object.__setattr__(event, "published_at", utc)
    _check_optional_header_text(event.source, "image event.source")
    _check_optional_header_text(event.trace_id, "image event.trace_id")


def _check_inline_content_type(content_type: str) -> None:
    check_text(content_type, "image event.content-type", max_length=HEADER_TEXT_MAX_LENGTH)
    media_type = _media_type(content_type)
    if not (media_type.startswith("image/") or media_type == OCTET_STREAM):
        raise schema_violation(
            f"image event: content-type {content_type!r} is neither image/* nor {OCTET_STREAM}"
        )


def _media_type(content_type: str) -> str:
    """The media type without parameters, lower-cased (``Image/JPEG; q=1`` → ``image/jpeg``)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not _CONTENT_TYPE.fullmatch(media_type):
        raise schema_violation(f"image event: content-type {content_type[:64]!r} is malformed")
    return media_type


def encode_image_event(event: ImageEvent) -> KafkaRecord:
    """Encode an image event as the Kafka record to publish.

    Args:
        event: An inline photo or a photo reference.

    Returns:
        The record (no topic, partition or offset yet).
    """
    if isinstance(event, InlinePhoto):
        content_type, value = event.content_type, event.data
    else:
        content_type = REFERENCE_CONTENT_TYPE
        value = dump_json({"image_id": event.image_id, "uri": event.uri})
    headers: list[tuple[str, bytes]] = [
        (HEADER_CONTENT_TYPE, content_type.encode("utf-8")),
        (HEADER_SCHEMA_VERSION, IMAGE_EVENT_SCHEMA_VERSION.encode("ascii")),
    ]
    if event.published_at is not None:
        headers.append((HEADER_PUBLISHED_AT, format_rfc3339(event.published_at).encode("ascii")))
    if event.source is not None:
        headers.append((HEADER_SOURCE, event.source.encode("utf-8")))
    if event.trace_id is not None:
        headers.append((HEADER_TRACE_ID, event.trace_id.encode("utf-8")))
    return KafkaRecord(key=event.image_id.encode("utf-8"), value=value, headers=tuple(headers))


def _required_header(record: KafkaRecord, name: str) -> str:
    value = _optional_header(record, name)
    if value is None:
        raise schema_violation(f"image event: missing header {name!r}")
    return value


def _optional_header(record: KafkaRecord, name: str) -> str | None:
    values = record.header_values(name)
    if not values:
        return None
    if len(values) > 1:
        raise schema_violation(f"image event: header {name!r} appears {len(values)} times")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise schema_violation(f"image event: header {name!r} is not UTF-8") from None


def decode_image_event(record: KafkaRecord) -> ImageEvent:
    """Decode and validate an image event.

    Args:
        record: The consumed record.

    Returns:
        An :class:`InlinePhoto` or a :class:`PhotoReference`.

    Raises:
        InputError: ``schema_violation`` for a missing or non-UTF-8 key, a missing, repeated or
            malformed header, an unknown schema version, an empty value, or a JSON reference that
            is malformed or whose ``image_id`` differs from the key.
    """
    if record.key is None:
        raise schema_violation("image event: missing key (the image id)")
    try:
        image_id = record.key.decode("utf-8")
    except UnicodeDecodeError:
        raise schema_violation("image event: key is not UTF-8") from None
    _check_image_id(image_id, "image event key")
    version = _required_header(record, HEADER_SCHEMA_VERSION)
    if version != IMAGE_EVENT_SCHEMA_VERSION:
        raise schema_violation(
            f"image event: unknown schema-version {version!r} "
            f"(this worker reads {IMAGE_EVENT_SCHEMA_VERSION!r})"
        )
    content_type = _required_header(record, HEADER_CONTENT_TYPE)
    published_text = _optional_header(record, HEADER_PUBLISHED_AT)
    published_at = (
        None if published_text is None else parse_rfc3339(published_text, "header published-at")
    )
    source = _optional_header(record, HEADER_SOURCE)
    trace_id = _optional_header(record, HEADER_TRACE_ID)
    if not record.value:
        raise schema_violation("image event: empty value")
    if _media_type(content_type) == REFERENCE_CONTENT_TYPE:
        uri = _reference_uri(record.value, image_id)
        return PhotoReference(image_id, uri, published_at, source, trace_id)
    return InlinePhoto(image_id, record.value, content_type, published_at, source, trace_id)


def _reference_uri(value: bytes, image_id: str) -> str:
    where = "image reference"
    document = load_json_object(value, where)
    check_keys(document, where, ("image_id", "uri"))
    referenced_id = _check_image_id(document["image_id"], f"{where}.image_id")
    if referenced_id != image_id:
        raise schema_violation(
            f"{where}: image_id {referenced_id[:64]!r} differs from the record key {image_id[:64]!r}"
        )
    return check_text(
        document["uri"], f"{where}.uri", max_length=URI_MAX_LENGTH, pattern=URI_PATTERN
    )
