"""The users' commands without a broker: finding photos, image ids, rendering events."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from client.follow import FollowSettings, _render, format_tag_event
from client.publish import PublishSettings, find_photos
from configuration import build_parser, load_settings
from configuration.base import env_name, is_positional
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


@pytest.mark.parametrize("settings_class", [PublishSettings, FollowSettings])
def test_help_names_the_variable_of_every_flag(settings_class: type) -> None:
    parser = build_parser(settings_class, prog="p", description="d")
    help_text = " ".join(parser.format_help().split())
    for name, field in settings_class.model_fields.items():
        if not is_positional(field):
            variable = env_name(settings_class, name)
            # A secret also names its file variable: "[env: X or X_FILE]".
            shown = (f"[env: {variable}]", f"[env: {variable} or {variable}_FILE]")
            assert any(text in help_text for text in shown), name


def test_publish_as_flag_keeps_its_name(folder: Path) -> None:
    settings = load_settings(
        PublishSettings, [str(folder), "--as", "reference"], prog="p", description="d"
    )
    assert settings.publish_as == "reference"
    assert settings.paths == (folder,)


def test_client_tools_import_neither_the_model_nor_the_service() -> None:
    """Users install landmark-publish/follow without TensorFlow: the client imports schemas only."""
    code = (
        "import sys, client.publish, client.follow; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'jax', 'worker', 'trainer', 'pymilvus')); print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


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
