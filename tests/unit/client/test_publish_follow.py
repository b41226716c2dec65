"""The users' commands without a broker: finding photos, image ids, rendering events."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from client.follow import _render, format_tag_event
from client.publish import build_parser, find_photos
from schemas.dead_letter import DeadLetter
from schemas.errors import ReasonCode
from schemas.kafka_record import KafkaRecord
from schemas.tag_event import Landmark, Neighbour, TagEvent

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "taj").mkdir()
    (tmp_path / "taj" / "a.jpg").write_bytes(b"photo-a")
    (tmp_path / "taj" / "notes.txt").write_bytes(b"not a photo")
    (tmp_path / "b.PNG").write_bytes(b"photo-b")
    return tmp_path


def test_folder_is_searched_recursively_for_photo_suffixes(folder: Path) -> None:
    found = find_photos([folder], "path")
    assert [p.image_id for p in found] == ["b.PNG", "taj/a.jpg"]


def test_hash_id_is_the_content_hash(folder: Path) -> None:
    (photo,) = find_photos([folder / "taj" / "a.jpg"], "hash")
    assert photo.image_id == hashlib.sha256(b"photo-a").hexdigest()[:32]


def test_explicit_file_is_taken_whatever_its_suffix(folder: Path) -> None:
    (photo,) = find_photos([folder / "taj" / "notes.txt"], "path")
    assert photo.image_id == "notes.txt"


def test_missing_input_is_an_error(folder: Path) -> None:
    with pytest.raises(FileNotFoundError):
        find_photos([folder / "nope"], "path")


def test_publish_help_names_the_env_vars() -> None:
    help_text = " ".join(build_parser({}).format_help().split())
    assert "[env: LANDMARK_KAFKA_BOOTSTRAP]" in help_text
    assert "[env: LANDMARK_PUBLISH_AS]" in help_text


def tag_event(landmark: Landmark | None) -> TagEvent:
    return TagEvent(
        image_id="img-1",
        landmark=landmark,
        confidence=0.75,
        neighbours=(Neighbour("r1", "taj", "Taj Mahal", 0.1),),
        model_version="m1",
        gallery_version="g1",
        worker_id="w1",
        published_at=NOW,
        tagged_at=NOW,
        latency_ms=12.0,
    )


def test_pretty_line_names_landmark_confidence_and_versions() -> None:
    line = format_tag_event(tag_event(Landmark("taj", "Taj Mahal")))
    assert all(
        part in line for part in ("img-1", "Taj Mahal", "0.75", "12 ms", "model m1", "gallery g1")
    )


def test_pretty_line_says_no_landmark() -> None:
    assert "no landmark" in format_tag_event(tag_event(None))


def test_json_line_is_the_tag_event() -> None:
    event = tag_event(Landmark("taj", "Taj Mahal"))
    assert json.loads(_render(False, event.to_json_bytes(), True)) == event.to_dict()


def test_dead_letter_json_line_is_marked() -> None:
    letter = DeadLetter.from_record(
        KafkaRecord(key=b"k", value=b"x", topic="images"),
        ReasonCode.UNDECODABLE_IMAGE,
        "broken",
        "w1",
        NOW,
    )
    assert json.loads(_render(True, letter.to_json_bytes(), True))["kind"] == "dead_letter"


def test_invalid_event_is_reported_not_raised() -> None:
    assert "invalid event" in _render(False, b"{not json", False)
