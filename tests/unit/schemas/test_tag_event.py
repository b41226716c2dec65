"""Tag events: JSON round trips and rejection of malformed documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from schema_strategies import tag_events

from schemas.errors import InputError, ReasonCode
from schemas.tag_event import Landmark, Neighbour, TagEvent, latency_ms_between

NOW = datetime(2026, 11, 27, 5, 0, 0, 123456, tzinfo=UTC)


def _event() -> TagEvent:
    return TagEvent(
        image_id="img-1",
        landmark=Landmark("india_gate", "India Gate"),
        confidence=0.75,
        neighbours=(Neighbour("r1", "india_gate", "India Gate", 0.12),),
        model_version="0123456789abcdef",
        gallery_version="g1",
        worker_id="worker-1",
        published_at=NOW,
        tagged_at=NOW,
        latency_ms=0.0,
    )


def _document() -> dict[str, object]:
    parsed: dict[str, object] = json.loads(_event().to_json_bytes())
    return parsed


def _assert_refused(document: object, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        TagEvent.from_json_bytes(json.dumps(document).encode())
    assert caught.value.reason is ReasonCode.SCHEMA_VIOLATION
    assert fragment in caught.value.message


@given(tag_events)
def test_tag_event_round_trips(event: TagEvent) -> None:
    assert TagEvent.from_json_bytes(event.to_json_bytes()) == event


def test_timestamps_are_written_in_utc_rfc3339() -> None:
    assert _document()["tagged_at"] == "2026-11-27T05:00:00.123456Z"


def test_no_landmark_is_written_as_null() -> None:
    event = TagEvent.from_json_bytes(json.dumps({**_document(), "landmark": None}).encode("utf-8"))
    assert event.landmark is None


def test_missing_key_is_refused() -> None:
    document = _document()
    del document["worker_id"]
    _assert_refused(document, "missing required key 'worker_id'")


def test_unexpected_key_is_refused() -> None:
    _assert_refused({**_document(), "extra": 1}, "unexpected key 'extra'")


def test_confidence_above_one_is_refused() -> None:
    _assert_refused({**_document(), "confidence": 1.5}, "above the maximum")


def test_boolean_confidence_is_refused() -> None:
    _assert_refused({**_document(), "confidence": True}, "expected number")


def test_distance_outside_zero_to_four_is_refused() -> None:
    neighbour = {"reference_id": "r", "landmark_id": "a", "landmark_name": "A", "distance": 4.5}
    _assert_refused({**_document(), "neighbours": [neighbour]}, "neighbours[0].distance")


def test_unknown_schema_version_is_refused() -> None:
    _assert_refused({**_document(), "schema_version": "2"}, "unknown schema_version")


def test_naive_timestamp_text_is_refused() -> None:
    _assert_refused({**_document(), "tagged_at": "2026-11-27T05:00:00"}, "RFC 3339")


def test_impossible_date_is_refused() -> None:
    _assert_refused({**_document(), "tagged_at": "2026-02-30T05:00:00Z"}, "not a valid date-time")


def test_nan_is_refused() -> None:
    with pytest.raises(InputError, match="invalid JSON"):
        TagEvent.from_json_bytes(_event().to_json_bytes().replace(b"0.75", b"NaN"))


def test_duplicate_key_is_refused() -> None:
    with pytest.raises(InputError, match="duplicate key"):
        TagEvent.from_json_bytes(b'{"image_id": "a", "image_id": "b"}')


def test_non_utf8_bytes_are_refused() -> None:
    with pytest.raises(InputError, match="not UTF-8"):
        TagEvent.from_json_bytes(b"\xff\xfe{}")


def test_top_level_array_is_refused() -> None:
    with pytest.raises(InputError, match="expected a JSON object"):
        TagEvent.from_json_bytes(b"[]")


def test_other_timezone_is_normalised_to_utc() -> None:
    from datetime import timedelta, timezone

    local = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    event = TagEvent.from_json_bytes(
        json.dumps({**_document(), "tagged_at": local.isoformat()}).encode()
    )
    assert event.tagged_at == NOW
    assert event.tagged_at.tzinfo is UTC


def test_record_is_keyed_by_image_id() -> None:
    record = _event().to_record()
    assert record.key == b"img-1"
    assert TagEvent.from_json_bytes(record.value or b"") == _event()


def test_latency_is_milliseconds_from_publish_to_tag() -> None:
    later = datetime(2026, 11, 27, 5, 0, 1, tzinfo=UTC)
    assert latency_ms_between(NOW, later) == pytest.approx(876.544)


def test_latency_is_clamped_at_zero_for_clock_skew() -> None:
    later = datetime(2026, 11, 27, 5, 0, 1, tzinfo=UTC)
    assert latency_ms_between(later, NOW) == 0.0
