"""The bounds that keep every dead letter small enough to publish, whatever the input.

A dead letter copies parts of a record that anyone may have produced: a 5 MiB header copied
whole makes a dead letter over the producer's request limit, which then can never be written.
:func:`bound_record_parts` cuts each copied part to a fixed limit and, for anything it cut,
keeps a :class:`TruncatedPart` (its size and sha256), so that the original can still be matched.

With these limits a serialised dead letter is at most :data:`MAX_DEAD_LETTER_BYTES` (1 MiB) even
when every copied character is one that JSON writes with six bytes (``\\u0001``):

=====================  ===========================================  ================
part                   limit                                        worst JSON bytes
=====================  ===========================================  ================
inline value           512 KiB, as base64                           699,054
headers                32 names of <= 128 chars, values <= 1024     221,376
truncated entries      <= 35: key, message, dropped headers, one    31,600
                       per cut header value (field <= 145 chars)
key, message           1,024 and 2,000 characters                   18,148
worker id, topic       256 and 249 characters                       3,034
the rest               field names, numbers, the timestamp          1,000
total                                                               < 975,000
=====================  ===========================================  ================

``test_worst_case_record_fits_the_documented_maximum`` builds that record (969,750 bytes).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.json_fields import (
    JsonObject,
    check_integer,
    check_keys,
    check_object,
    check_text,
)

#: Largest serialised dead letter (UTF-8 JSON), far below a producer's 4 MiB request limit.
MAX_DEAD_LETTER_BYTES = 1024 * 1024
#: Largest original value a dead letter carries inline (base64); larger ones keep size and hash.
MAX_INLINE_VALUE_BYTES = 512 * 1024
KEY_MAX_LENGTH = 1024
MESSAGE_MAX_LENGTH = 2000
#: Most distinct header names kept; later ones are dropped (and hashed together).
HEADER_COUNT_MAX = 32
#: A header whose name is longer is dropped rather than cut, so that kept names stay unique.
HEADER_NAME_MAX_LENGTH = 128
HEADER_VALUE_MAX_LENGTH = 1024
TRUNCATED_FIELD_MAX_LENGTH = 256
#: ``field`` of the entry for the dropped headers; ``HEADER_FIELD_PREFIX + name`` for a cut value.
DROPPED_HEADERS_FIELD = "original_headers"
HEADER_FIELD_PREFIX = "original_headers."
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_TRUNCATED_KEYS = ("field", "size", "sha256")


@dataclass(frozen=True)
class TruncatedPart:
    """A part of the original record that the dead letter cut or dropped.

    Attributes:
        field: Which part: ``original_key``, ``message``, ``original_headers`` (the headers
            that were dropped: repeated names but the last, names over 128 characters, names
            beyond the 32nd) or ``original_headers.<name>`` (that header's value was cut).
        size: Length in bytes of the original part (for ``original_headers``: of the dropped
            headers, each written as a 4-byte big-endian length and the UTF-8 name, then a
            4-byte length and the value, in broker order; for ``message``: its UTF-8 text).
        sha256: Hex sha256 of those same bytes.
    """

    field: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        where = "dead letter.truncated"
        check_text(self.field, f"{where}.field", max_length=TRUNCATED_FIELD_MAX_LENGTH)
        check_integer(self.size, f"{where}.size", minimum=0)
        check_text(self.sha256, f"{where}.sha256", pattern=SHA256_PATTERN)

    @classmethod
    def of(cls, field: str, original: bytes) -> TruncatedPart:
        """Describe ``original``, the bytes of the part named ``field`` that were cut."""
        return cls(field=field, size=len(original), sha256=hashlib.sha256(original).hexdigest())

    def to_dict(self) -> JsonObject:
        """Return the JSON object for this entry."""
        return {"field": self.field, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, document: object, where: str) -> TruncatedPart:
        """Build an entry from its JSON object, validating it.

        Raises:
            InputError: ``schema_violation`` naming the first field that breaks the schema.
        """
        obj = check_object(document, where)
        check_keys(obj, where, _TRUNCATED_KEYS)
        return cls(
            field=check_text(obj["field"], f"{where}.field"),
            size=check_integer(obj["size"], f"{where}.size"),
            sha256=check_text(obj["sha256"], f"{where}.sha256"),
        )


@dataclass(frozen=True)
class BoundedParts:
    """The copied parts of a record, each within its limit, and what was cut to get there."""

    key: str | None
    headers: dict[str, str]
    message: str
    truncated: tuple[TruncatedPart, ...]


def text_of(raw: bytes) -> str:
    """Return ``raw`` as text; bytes that are not UTF-8 become backslash escapes.

    Keys and header values are meant to be UTF-8; anything else is kept readable and lossless
    enough to investigate, since a dead letter must never fail to be written.
    """
    return raw.decode("utf-8", errors="backslashreplace")


def bounded_text(raw: bytes, limit: int) -> tuple[str, bool]:
    """Return the first ``limit`` characters of ``text_of(raw)`` and whether more followed.

    Decodes only a prefix: a character takes at most four bytes, so the first
    ``4 * limit + 4`` bytes give at least ``limit + 1`` characters when there are more.
    """
    text = text_of(raw[: 4 * limit + 4])
    return text[:limit], len(text) > limit


def utf8_of(text: str) -> bytes:
    """Encode text as UTF-8, keeping unpaired surrogates (as invalid bytes) instead of failing."""
    return text.encode("utf-8", errors="surrogatepass")


def bound_record_parts(
    key: bytes | None, headers: Sequence[tuple[str, bytes]], message: str
) -> BoundedParts:
    """Cut a record's key and headers and a failure message to the dead letter's limits.

    Args:
        key: The record key, or ``None``.
        headers: The record headers in broker order (names may repeat; the last value wins).
        message: The failure message.

    Returns:
        The parts as text within their limits, with an entry for each one cut or dropped.
    """
    truncated: list[TruncatedPart] = []
    key_text = None
    if key is not None:
        key_text, cut = bounded_text(key, KEY_MAX_LENGTH)
        if cut:
            truncated.append(TruncatedPart.of("original_key", key))
    kept, dropped = _select_headers(headers)
    header_texts: dict[str, str] = {}
    for name, index in kept.items():
        raw = headers[index][1]
        header_texts[name], cut = bounded_text(raw, HEADER_VALUE_MAX_LENGTH)
        if cut:
            truncated.append(TruncatedPart.of(HEADER_FIELD_PREFIX + name, raw))
    if dropped:
        truncated.append(TruncatedPart.of(DROPPED_HEADERS_FIELD, dropped))
    message_text, cut = bounded_text(utf8_of(message), MESSAGE_MAX_LENGTH)
    if cut:
        truncated.append(TruncatedPart.of("message", utf8_of(message)))
    return BoundedParts(key_text, header_texts, message_text, tuple(truncated))


def _select_headers(headers: Sequence[tuple[str, bytes]]) -> tuple[dict[str, int], bytes]:
    """Pick the header kept for each name; return name → index and the dropped ones' bytes."""
    kept: dict[str, int] = {}
    for index, (name, _) in enumerate(headers):
        text, cut = bounded_text(utf8_of(name), HEADER_NAME_MAX_LENGTH)
        if not cut and (text in kept or len(kept) < HEADER_COUNT_MAX):
            kept[text] = index
    kept_indices = set(kept.values())
    dropped = b"".join(
        _length_prefixed(utf8_of(name)) + _length_prefixed(value)
        for index, (name, value) in enumerate(headers)
        if index not in kept_indices
    )
    return kept, dropped


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data
