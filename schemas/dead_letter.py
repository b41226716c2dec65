"""The dead letter (topic ``images.dlq``): an input the worker could not tag, and why.

JSON, described by ``schemas/json/dead-letter.schema.json``. It keeps enough of the original
record to replay or inspect it: key, headers, the value itself when small (base64) and always its
size and sha256. Every copied part is bounded (:mod:`schemas.dead_letter_bounds`), so a dead letter
built by :meth:`DeadLetter.from_record` is at most ``MAX_DEAD_LETTER_BYTES`` (1 MiB) serialised,
whatever the record; what was cut is listed in ``truncated`` with its size and sha256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from schemas.dead_letter_bounds import (
    KEY_MAX_LENGTH,
    MAX_INLINE_VALUE_BYTES,
    MESSAGE_MAX_LENGTH,
    SHA256_PATTERN,
    TruncatedPart,
    bound_record_parts,
)
from schemas.errors import ReasonCode, schema_violation
from schemas.json_fields import (
    JsonObject,
    check_array,
    check_integer,
    check_keys,
    check_object,
    check_text,
    check_timestamp,
    dump_json,
    load_json_object,
)
from schemas.kafka_record import KafkaRecord
from schemas.timestamps import format_rfc3339, require_utc

DEAD_LETTER_SCHEMA_VERSION = "1"
DEFAULT_DEAD_LETTER_TOPIC = "images.dlq"
DEAD_LETTER_CONTENT_TYPE = "application/json"
DEFAULT_MAX_INLINE_BYTES = MAX_INLINE_VALUE_BYTES
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")

_KEYS = (
    "schema_version",
    "original_key",
    "original_headers",
    "value_base64",
    "value_size",
    "value_sha256",
    "reason",
    "message",
    "worker_id",
    "failed_at",
    "source_topic",
    "source_partition",
    "source_offset",
)
#: Absent when nothing was cut, so that readers older than the field read most dead letters.
_OPTIONAL_KEYS = ("truncated",)


@dataclass(frozen=True)
class DeadLetter:
    """An input that could not be tagged.

    Attributes:
        original_key: The record key as text (non-UTF-8 bytes backslash-escaped), or ``None``.
        original_headers: Header name → value as text (the last value wins for repeated names).
        value_base64: The value, base64-encoded, when small enough to keep inline; else ``None``.
        value_size: The value's length in bytes (0 for a missing value).
        value_sha256: Hex sha256 of the value (of ``b""`` for a missing value).
        reason: Why it failed.
        message: A human-readable explanation.
        worker_id: The worker that gave up on it.
        failed_at: When.
        source_topic: Where it was read from.
        source_partition: Its partition (-1 when unknown).
        source_offset: Its offset (-1 when unknown).
        schema_version: The dead-letter schema version.
        truncated: What was cut from the key, headers or message, with its size and sha256.
    """

    original_key: str | None
    original_headers: dict[str, str]
    value_base64: str | None
    value_size: int
    value_sha256: str
    reason: ReasonCode
    message: str
    worker_id: str
    failed_at: datetime
    source_topic: str
    source_partition: int
    source_offset: int
    schema_version: str = DEAD_LETTER_SCHEMA_VERSION
    truncated: tuple[TruncatedPart, ...] = ()

    def __post_init__(self) -> None:
        where = "dead letter"
        if self.schema_version != DEAD_LETTER_SCHEMA_VERSION:
            raise schema_violation(f"{where}: unknown schema_version {self.schema_version!r}")
        if self.original_key is not None:
            check_text(
                self.original_key, f"{where}.original_key", min_length=0, max_length=KEY_MAX_LENGTH
            )
        if not isinstance(self.original_headers, dict):
            raise schema_violation(f"{where}.original_headers: expected a dict")
        for name, value in self.original_headers.items():
            check_text(name, f"{where}.original_headers key", min_length=0)
            check_text(value, f"{where}.original_headers[{name!r}]", min_length=0)
        check_integer(self.value_size, f"{where}.value_size", minimum=0)
        check_text(self.value_sha256, f"{where}.value_sha256", pattern=SHA256_PATTERN)
        if self.value_base64 is not None:
            _check_inline_value(self.value_base64, self.value_size, self.value_sha256)
        if not isinstance(self.reason, ReasonCode):
            raise schema_violation(f"{where}.reason: expected a ReasonCode")
        check_text(self.message, f"{where}.message", max_length=MESSAGE_MAX_LENGTH)
        check_text(self.worker_id, f"{where}.worker_id", max_length=256)
        object.__setattr__(self, "failed_at", require_utc(self.failed_at, f"{where}.failed_at"))
        check_text(self.source_topic, f"{where}.source_topic", min_length=0, max_length=249)
        check_integer(self.source_partition, f"{where}.source_partition", minimum=-1)
        check_integer(self.source_offset, f"{where}.source_offset", minimum=-1)
        if not all(isinstance(part, TruncatedPart) for part in self.truncated):
            raise schema_violation(f"{where}.truncated: expected TruncatedPart entries")

    @classmethod
    def from_record(
        cls,
        record: KafkaRecord,
        reason: ReasonCode,
        message: str,
        worker_id: str,
        now: datetime,
        max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
    ) -> DeadLetter:
        """Build the dead letter for a record that could not be tagged.

        Args:
            record: The original record.
            reason: Why it failed.
            message: A human-readable explanation (cut to 2000 characters).
            worker_id: The worker giving up on it.
            now: The current time (timezone-aware).
            max_inline_bytes: Values up to this size are kept inline as base64; never more than
                ``MAX_INLINE_VALUE_BYTES`` (512 KiB), whatever is asked.

        Returns:
            The dead letter; serialised, at most ``MAX_DEAD_LETTER_BYTES``.
        """
        value = record.value if record.value is not None else b""
        inline_limit = min(max_inline_bytes, MAX_INLINE_VALUE_BYTES)
        inline = record.value is not None and len(value) <= inline_limit
        parts = bound_record_parts(record.key, record.headers, message or reason.value)
        return cls(
            original_key=parts.key,
            original_headers=parts.headers,
            value_base64=base64.b64encode(value).decode("ascii") if inline else None,
            value_size=len(value),
            value_sha256=hashlib.sha256(value).hexdigest(),
            reason=reason,
            message=parts.message,
            worker_id=worker_id,
            failed_at=now,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            truncated=parts.truncated,
        )

    def original_value(self) -> bytes | None:
        """Return the original value when it was kept inline, else ``None``."""
        return None if self.value_base64 is None else base64.b64decode(self.value_base64)

    def to_dict(self) -> JsonObject:
        """Return the JSON object for this dead letter (``truncated`` only when not empty)."""
        document: JsonObject = {
            "schema_version": self.schema_version,
            "original_key": self.original_key,
            "original_headers": dict(self.original_headers),
            "value_base64": self.value_base64,
            "value_size": self.value_size,
            "value_sha256": self.value_sha256,
            "reason": self.reason.value,
            "message": self.message,
            "worker_id": self.worker_id,
            "failed_at": format_rfc3339(self.failed_at),
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
        }
        if self.truncated:
            document["truncated"] = [part.to_dict() for part in self.truncated]
        return document

    def to_json_bytes(self) -> bytes:
        """Serialise as UTF-8 JSON that ``dead-letter.schema.json`` accepts."""
        return dump_json(self.to_dict())

    def to_record(self) -> KafkaRecord:
        """Return the Kafka record to publish, keyed like the original record."""
        key = None if self.original_key is None else self.original_key.encode("utf-8")
        return KafkaRecord(
            key=key,
            value=self.to_json_bytes(),
            headers=(
                ("content-type", DEAD_LETTER_CONTENT_TYPE.encode("ascii")),
                ("schema-version", self.schema_version.encode("ascii")),
            ),
        )

    @classmethod
    def from_dict(cls, document: object) -> DeadLetter:
        """Build a dead letter from its parsed JSON object, validating it.

        Args:
            document: The parsed JSON value.

        Returns:
            The dead letter.

        Raises:
            InputError: ``schema_violation`` naming the first field that breaks the schema.
        """
        where = "dead letter"
        obj = check_object(document, where)
        check_keys(obj, where, _KEYS, _OPTIONAL_KEYS)
        version = check_text(obj["schema_version"], f"{where}.schema_version")
        if version != DEAD_LETTER_SCHEMA_VERSION:
            raise schema_violation(f"{where}: unknown schema_version {version!r}")
        headers = check_object(obj["original_headers"], f"{where}.original_headers")
        reason_text = check_text(obj["reason"], f"{where}.reason")
        try:
            reason = ReasonCode(reason_text)
        except ValueError:
            raise schema_violation(f"{where}.reason: unknown reason code {reason_text!r}") from None
        key = obj["original_key"]
        value_base64 = obj["value_base64"]
        return cls(
            original_key=None
            if key is None
            else check_text(key, f"{where}.original_key", min_length=0),
            original_headers={
                name: check_text(value, f"{where}.original_headers[{name!r}]", min_length=0)
                for name, value in headers.items()
            },
            value_base64=None
            if value_base64 is None
            else check_text(value_base64, f"{where}.value_base64", min_length=0),
            value_size=check_integer(obj["value_size"], f"{where}.value_size", minimum=0),
            value_sha256=check_text(obj["value_sha256"], f"{where}.value_sha256"),
            reason=reason,
            message=check_text(obj["message"], f"{where}.message"),
            worker_id=check_text(obj["worker_id"], f"{where}.worker_id"),
            failed_at=check_timestamp(obj["failed_at"], f"{where}.failed_at"),
            source_topic=check_text(obj["source_topic"], f"{where}.source_topic", min_length=0),
            source_partition=check_integer(obj["source_partition"], f"{where}.source_partition"),
            source_offset=check_integer(obj["source_offset"], f"{where}.source_offset"),
            truncated=tuple(
                TruncatedPart.from_dict(part, f"{where}.truncated[{index}]")
                for index, part in enumerate(
                    check_array(obj.get("truncated", []), f"{where}.truncated")
                )
            ),
        )

    @classmethod
    def from_json_bytes(cls, data: bytes) -> DeadLetter:
        """Parse and validate a dead letter.

        Args:
            data: UTF-8 JSON bytes.

        Returns:
            The dead letter.

        Raises:
            InputError: ``schema_violation`` for bad JSON or a document that breaks the schema.
        """
        return cls.from_dict(load_json_object(data, "dead letter"))


def _check_inline_value(value_base64: str, value_size: int, value_sha256: str) -> None:
    where = "dead letter.value_base64"
    check_text(value_base64, where, min_length=0, pattern=_BASE64)
    try:
        value = base64.b64decode(value_base64, validate=True)
    except (binascii.Error, ValueError):
        raise schema_violation(f"{where}: not valid base64") from None
    if len(value) != value_size:
        raise schema_violation(
            f"{where}: decodes to {len(value)} bytes, value_size is {value_size}"
        )
    if hashlib.sha256(value).hexdigest() != value_sha256:
        raise schema_violation(f"{where}: does not match value_sha256")
