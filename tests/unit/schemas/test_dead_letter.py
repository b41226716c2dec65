"""Dead letters: built from a record, JSON round trips, rejection of malformed documents."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from schema_strategies import dead_letters

from schemas.dead_letter import DeadLetter
from schemas.errors import InputError, ReasonCode
from schemas.kafka_record import KafkaRecord

NOW = datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
RECORD = KafkaRecord(
    key=b"img-1",
    value=b"not a photo",
    headers=(("content-type", b"image/jpeg"), ("trace-id", b"\xff")),
    topic="images",
    partition=3,
    offset=42,
)


def _letter(record: KafkaRecord = RECORD, max_inline_bytes: int = 1_000_000) -> DeadLetter:
    return DeadLetter.from_record(
        record, ReasonCode.UNSUPPORTED_FORMAT, "no magic bytes", "worker-1", NOW, max_inline_bytes
    )


def _assert_refused(document: object, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        DeadLetter.from_json_bytes(json.dumps(document).encode())
    assert caught.value.reason is ReasonCode.SCHEMA_VIOLATION
    assert fragment in caught.value.message


@given(dead_letters)
def test_dead_letter_round_trips(letter: DeadLetter) -> None:
    assert DeadLetter.from_json_bytes(letter.to_json_bytes()) == letter


def test_small_value_is_kept_inline() -> None:
    assert _letter().original_value() == b"not a photo"


def test_large_value_keeps_only_size_and_hash() -> None:
    letter = _letter(max_inline_bytes=4)
    assert (letter.value_base64, letter.value_size) == (None, len(b"not a photo"))
    assert letter.value_sha256 == hashlib.sha256(b"not a photo").hexdigest()


def test_source_position_is_recorded() -> None:
    letter = _letter()
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("images", 3, 42)


def test_non_utf8_header_value_is_escaped() -> None:
    assert _letter().original_headers["trace-id"] == "\\xff"


def test_missing_value_has_size_zero() -> None:
    letter = _letter(KafkaRecord(key=None, value=None))
    assert (letter.original_key, letter.value_base64, letter.value_size) == (None, None, 0)


def test_unknown_reason_is_refused() -> None:
    document = json.loads(_letter().to_json_bytes())
    _assert_refused({**document, "reason": "gremlins"}, "unknown reason code")


def test_inline_value_that_contradicts_size_is_refused() -> None:
    document = json.loads(_letter().to_json_bytes())
    other = base64.b64encode(b"something else").decode()
    _assert_refused({**document, "value_base64": other}, "value_size")


def test_missing_key_is_refused() -> None:
    document = json.loads(_letter().to_json_bytes())
    del document["failed_at"]
    _assert_refused(document, "missing required key 'failed_at'")


def test_float_offset_is_refused() -> None:
    document = json.loads(_letter().to_json_bytes())
    _assert_refused({**document, "source_offset": 1.5}, "expected integer")


def test_record_is_keyed_like_the_original() -> None:
    assert _letter().to_record().key == b"img-1"
