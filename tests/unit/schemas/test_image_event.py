"""Image events: round trips and rejection of malformed records."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from schema_strategies import inline_photos, photo_references

from schemas.errors import InputError, ReasonCode
from schemas.image_event import (
    InlinePhoto,
    PhotoReference,
    decode_image_event,
    encode_image_event,
)
from schemas.kafka_record import KafkaRecord


def _reference_record(image_id: str = "img-1", value: bytes | None = None) -> KafkaRecord:
    record = encode_image_event(PhotoReference(image_id, "file:///photos/a.jpg"))
    return record if value is None else replace(record, value=value)


def _assert_schema_violation(record: KafkaRecord, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        decode_image_event(record)
    assert caught.value.reason is ReasonCode.SCHEMA_VIOLATION
    assert fragment in caught.value.message


@given(inline_photos)
def test_inline_photo_round_trips(event: InlinePhoto) -> None:
    assert decode_image_event(encode_image_event(event)) == event


@given(photo_references)
def test_photo_reference_round_trips(event: PhotoReference) -> None:
    assert decode_image_event(encode_image_event(event)) == event


def test_reference_value_is_json_with_image_id_and_uri() -> None:
    record = encode_image_event(PhotoReference("img-1", "https://photos.example/a.jpg"))
    assert json.loads(record.value or b"") == {
        "image_id": "img-1",
        "uri": "https://photos.example/a.jpg",
    }
    assert record.header_values("content-type") == (b"application/json",)


def test_missing_key_is_refused() -> None:
    _assert_schema_violation(replace(_reference_record(), key=None), "missing key")


def test_non_utf8_key_is_refused() -> None:
    _assert_schema_violation(replace(_reference_record(), key=b"\xff\xfe"), "key is not UTF-8")


def test_missing_schema_version_header_is_refused() -> None:
    record = _reference_record()
    headers = tuple(h for h in record.headers if h[0] != "schema-version")
    _assert_schema_violation(replace(record, headers=headers), "missing header 'schema-version'")


def test_unknown_schema_version_is_refused() -> None:
    record = _reference_record()
    headers = tuple((n, b"2" if n == "schema-version" else v) for n, v in record.headers)
    _assert_schema_violation(replace(record, headers=headers), "unknown schema-version")


def test_repeated_header_is_refused() -> None:
    record = _reference_record()
    _assert_schema_violation(
        replace(record, headers=(*record.headers, ("schema-version", b"1"))), "appears 2 times"
    )


def test_malformed_published_at_is_refused() -> None:
    record = _reference_record()
    headers = (*record.headers, ("published-at", b"yesterday"))
    _assert_schema_violation(replace(record, headers=headers), "RFC 3339")


def test_non_json_reference_is_refused() -> None:
    _assert_schema_violation(_reference_record(value=b"{not json"), "invalid JSON")


def test_reference_missing_uri_is_refused() -> None:
    _assert_schema_violation(
        _reference_record(value=b'{"image_id": "img-1"}'), "missing required key 'uri'"
    )


def test_reference_with_wrong_type_is_refused() -> None:
    _assert_schema_violation(
        _reference_record(value=b'{"image_id": "img-1", "uri": 7}'), "expected string"
    )


def test_reference_with_other_image_id_is_refused() -> None:
    value = b'{"image_id": "img-2", "uri": "file:///photos/a.jpg"}'
    _assert_schema_violation(_reference_record(value=value), "differs from the record key")


def test_reference_with_unsupported_scheme_is_refused() -> None:
    value = b'{"image_id": "img-1", "uri": "ftp://host/a.jpg"}'
    _assert_schema_violation(_reference_record(value=value), "does not match")


def test_reference_with_extra_key_is_refused() -> None:
    value = b'{"image_id": "img-1", "uri": "file:///a.jpg", "size": 3}'
    _assert_schema_violation(_reference_record(value=value), "unexpected key 'size'")


def test_empty_value_is_refused() -> None:
    record = encode_image_event(InlinePhoto("img-1", b"\xff\xd8\xff", "image/jpeg"))
    _assert_schema_violation(replace(record, value=b""), "empty value")


def test_non_image_content_type_is_refused() -> None:
    record = encode_image_event(InlinePhoto("img-1", b"\xff\xd8\xff", "image/jpeg"))
    headers = tuple((n, b"text/plain" if n == "content-type" else v) for n, v in record.headers)
    _assert_schema_violation(replace(record, headers=headers), "neither image/*")


def test_content_type_parameters_are_ignored_for_references() -> None:
    record = _reference_record()
    headers = tuple(
        (n, b"Application/JSON; charset=utf-8" if n == "content-type" else v)
        for n, v in record.headers
    )
    event = decode_image_event(replace(record, headers=headers))
    assert isinstance(event, PhotoReference)


def test_unknown_headers_are_ignored() -> None:
    record = _reference_record()
    event = decode_image_event(replace(record, headers=(*record.headers, ("x-b3", b"\xff"))))
    assert event.image_id == "img-1"


def test_naive_published_at_is_refused_when_building() -> None:
    from datetime import datetime

    with pytest.raises(InputError, match="timezone-aware"):
        PhotoReference("img-1", "file:///a.jpg", published_at=datetime(2026, 1, 1))
