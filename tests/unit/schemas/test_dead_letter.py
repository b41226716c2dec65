"""Dead letters: built from a record, bounded, JSON round trips, rejection of malformed documents."""

from __future__ import annotations

import base64
import hashlib
import json
import operator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schema_strategies import dead_letters

from schemas.dead_letter import DeadLetter
from schemas.dead_letter_bounds import (
    HEADER_COUNT_MAX,
    HEADER_NAME_MAX_LENGTH,
    HEADER_VALUE_MAX_LENGTH,
    KEY_MAX_LENGTH,
    MAX_DEAD_LETTER_BYTES,
    MAX_INLINE_VALUE_BYTES,
)
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


def _oversized_letter(record: KafkaRecord, worker_id: str = "worker-1") -> DeadLetter:
    return DeadLetter.from_record(
        record, ReasonCode.SCHEMA_VIOLATION, "no schema-version", worker_id, NOW, 10**9
    )


def _truncated(letter: DeadLetter) -> dict[str, tuple[int, str]]:
    return {part.field: (part.size, part.sha256) for part in letter.truncated}


def test_five_mib_header_is_cut_and_the_letter_fits() -> None:
    """The issue's record: a 5 MiB header and no schema-version made a 5.3 MB dead letter."""
    big = b"h" * (5 * 1024 * 1024)
    record = KafkaRecord(key=b"img-1", value=b"x" * 10, headers=(("x-big", big),), topic="images")
    letter = _oversized_letter(record)
    assert len(letter.to_json_bytes()) <= MAX_DEAD_LETTER_BYTES
    assert letter.original_headers["x-big"] == "h" * HEADER_VALUE_MAX_LENGTH
    assert _truncated(letter) == {
        "original_headers.x-big": (len(big), hashlib.sha256(big).hexdigest())
    }


def test_long_key_is_cut_with_its_size_and_hash() -> None:
    key = b"k" * (KEY_MAX_LENGTH + 1)
    letter = _oversized_letter(KafkaRecord(key=key, value=None))
    assert letter.original_key == "k" * KEY_MAX_LENGTH
    assert _truncated(letter) == {"original_key": (len(key), hashlib.sha256(key).hexdigest())}


def test_headers_over_the_count_and_long_names_are_dropped_and_hashed() -> None:
    many = tuple((f"h{i}", b"v") for i in range(HEADER_COUNT_MAX + 2))
    long_name = ("n" * (HEADER_NAME_MAX_LENGTH + 1), b"v")
    letter = _oversized_letter(KafkaRecord(key=None, value=None, headers=(*many, long_name)))
    assert list(letter.original_headers) == [f"h{i}" for i in range(HEADER_COUNT_MAX)]
    dropped = b"".join(
        len(name.encode()).to_bytes(4, "big")
        + name.encode()
        + len(value).to_bytes(4, "big")
        + value
        for name, value in (*many[HEADER_COUNT_MAX:], long_name)
    )
    assert _truncated(letter) == {
        "original_headers": (len(dropped), hashlib.sha256(dropped).hexdigest())
    }


def test_a_repeated_header_keeps_its_last_value_and_hashes_the_others() -> None:
    letter = _oversized_letter(KafkaRecord(None, None, headers=(("a", b"1"), ("a", b"2"))))
    dropped = b"\0\0\0\x01a\0\0\0\x011"
    assert letter.original_headers == {"a": "2"}
    assert _truncated(letter) == {
        "original_headers": (len(dropped), hashlib.sha256(dropped).hexdigest())
    }


def test_inline_value_is_capped_whatever_the_caller_asks() -> None:
    value = b"v" * (MAX_INLINE_VALUE_BYTES + 1)
    letter = _oversized_letter(KafkaRecord(key=None, value=value))
    assert (letter.value_base64, letter.value_size) == (None, len(value))


def test_message_with_unpaired_surrogates_is_still_written() -> None:
    letter = DeadLetter.from_record(RECORD, ReasonCode.BAD_REFERENCE, "uri \ud800", "w", NOW)
    assert DeadLetter.from_json_bytes(letter.to_json_bytes()).message == "uri \\xed\\xa0\\x80"


def test_letter_without_truncated_key_from_older_workers_is_read() -> None:
    document = json.loads(_letter().to_json_bytes())
    assert "truncated" not in document
    assert DeadLetter.from_dict(document).truncated == ()


def test_worst_case_record_fits_the_documented_maximum() -> None:
    """Every copied part at its limit, in characters JSON writes with six bytes each."""
    control = b"\x01"
    headers = tuple(
        (f"{i:03d}" + "\x01" * (HEADER_NAME_MAX_LENGTH - 3), control * 10**5)
        for i in range(HEADER_COUNT_MAX)
    )
    record = KafkaRecord(
        key=control * 10**5,
        value=b"v" * MAX_INLINE_VALUE_BYTES,
        headers=(*headers, ("dropped", b"x")),
        topic="\x01" * 249,
    )
    letter = DeadLetter.from_record(
        record, ReasonCode.SCHEMA_VIOLATION, "\x01" * 10**5, "\x01" * 256, NOW, 10**9
    )
    assert len(letter.truncated) == HEADER_COUNT_MAX + 3
    assert len(letter.to_json_bytes()) <= MAX_DEAD_LETTER_BYTES


def _huge_bytes(max_repeats: int) -> st.SearchStrategy[bytes]:
    """Bytes up to megabytes long, cheaply: a short piece repeated (control, invalid, 4-byte)."""
    pieces = st.sampled_from([b"\x01", b"\xff", "\U0001f600".encode(), b'"\\']) | st.binary(
        min_size=1, max_size=6
    )
    return st.builds(operator.mul, pieces, _repeats(max_repeats))


def _repeats(max_repeats: int) -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=max_repeats) | st.just(max_repeats)


def _huge_text(max_repeats: int) -> st.SearchStrategy[str]:
    pieces = st.sampled_from(["\x01", "\ud800", "\U0001f600", "é"]) | st.text(max_size=4)
    return st.builds(operator.mul, pieces, _repeats(max_repeats))


huge_records = st.builds(
    KafkaRecord,
    key=st.none() | _huge_bytes(2_000_000),
    value=st.none() | _huge_bytes(1_000_000),
    headers=st.lists(
        st.tuples(_huge_text(400), _huge_bytes(200_000)), max_size=HEADER_COUNT_MAX + 8
    ).map(tuple),
    topic=st.text(max_size=249),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    huge_records,
    _huge_text(100_000),
    st.text(min_size=1, max_size=256),
    st.integers(min_value=0, max_value=10**9),
)
def test_any_record_makes_a_dead_letter_within_the_maximum(
    record: KafkaRecord, message: str, worker_id: str, max_inline_bytes: int
) -> None:
    letter = DeadLetter.from_record(
        record, ReasonCode.SCHEMA_VIOLATION, message, worker_id, NOW, max_inline_bytes
    )
    data = letter.to_json_bytes()
    assert len(data) <= MAX_DEAD_LETTER_BYTES
    assert DeadLetter.from_json_bytes(data) == letter
