"""Every JSON Schema file accepts what the code writes and rejects what the code rejects."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from schema_strategies import dead_letters, manifests, photo_references, tag_events

from schemas import (
    DEAD_LETTER_SCHEMA_FILE,
    IMAGE_REFERENCE_SCHEMA_FILE,
    JSON_SCHEMA_DIR,
    MODEL_MANIFEST_SCHEMA_FILE,
    TAG_EVENT_SCHEMA_FILE,
)
from schemas.dead_letter import DeadLetter
from schemas.errors import InputError
from schemas.image_event import PhotoReference, decode_image_event, encode_image_event
from schemas.manifest import ModelManifest
from schemas.tag_event import TagEvent
from schemas.timestamps import RFC3339_PATTERN


def _validator(path: Path) -> jsonschema.Draft202012Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


TAG = _validator(TAG_EVENT_SCHEMA_FILE)
DEAD = _validator(DEAD_LETTER_SCHEMA_FILE)
REFERENCE = _validator(IMAGE_REFERENCE_SCHEMA_FILE)
MANIFEST = _validator(MODEL_MANIFEST_SCHEMA_FILE)


def _reference_parse(document: dict[str, Any]) -> object:
    record = encode_image_event(PhotoReference("img-1", "file:///a.jpg"))
    from dataclasses import replace

    key = document.get("image_id")
    key_bytes = key.encode("utf-8") if isinstance(key, str) else b"img-1"
    return decode_image_event(
        replace(record, key=key_bytes, value=json.dumps(document).encode("utf-8"))
    )


PARSERS: dict[str, Callable[[bytes], object]] = {
    "tag": TagEvent.from_json_bytes,
    "dead": DeadLetter.from_json_bytes,
    "dead (truncated)": DeadLetter.from_json_bytes,
    "manifest": ModelManifest.from_json_bytes,
}


def test_every_schema_file_is_a_valid_draft_2020_12_schema() -> None:
    files = sorted(JSON_SCHEMA_DIR.glob("*.schema.json"))
    assert [f.name for f in files] == [
        "dead-letter.schema.json",
        "image-reference.schema.json",
        "model-manifest.schema.json",
        "tag-event.schema.json",
    ]
    for path in files:
        assert json.loads(path.read_text())["$schema"].endswith("draft/2020-12/schema")
        _validator(path)


def test_schema_timestamp_pattern_is_the_codes_pattern() -> None:
    patterns = set(
        re.findall(r'"pattern": "(\^\\\\d\{4\}[^"]*)"', TAG_EVENT_SCHEMA_FILE.read_text())
    )
    assert {json.loads(f'"{p}"') for p in patterns} == {RFC3339_PATTERN}


@settings(max_examples=50)
@given(tag_events)
def test_tag_event_schema_accepts_what_the_code_writes(event: TagEvent) -> None:
    TAG.validate(json.loads(event.to_json_bytes()))


@settings(max_examples=50)
@given(dead_letters)
def test_dead_letter_schema_accepts_what_the_code_writes(letter: DeadLetter) -> None:
    DEAD.validate(json.loads(letter.to_json_bytes()))


@settings(max_examples=50)
@given(manifests)
def test_manifest_schema_accepts_what_the_code_writes(manifest: ModelManifest) -> None:
    MANIFEST.validate(json.loads(manifest.to_json_bytes()))


@settings(max_examples=50)
@given(photo_references)
def test_reference_schema_accepts_what_the_code_writes(event: PhotoReference) -> None:
    REFERENCE.validate(json.loads(encode_image_event(event).value or b""))


def _valid_tag() -> dict[str, Any]:
    return {
        "schema_version": "1",
        "image_id": "img-1",
        "landmark": {"landmark_id": "a", "name": "A"},
        "confidence": 0.5,
        "neighbours": [
            {"reference_id": "r", "landmark_id": "a", "landmark_name": "A", "distance": 0.1}
        ],
        "model_version": "m1",
        "gallery_version": "g1",
        "worker_id": "w1",
        "published_at": None,
        "tagged_at": "2026-11-27T05:00:00Z",
        "latency_ms": None,
        "trace_id": None,
    }


def _valid_dead() -> dict[str, Any]:
    return {
        "schema_version": "1",
        "original_key": "img-1",
        "original_headers": {"content-type": "image/jpeg"},
        "value_base64": None,
        "value_size": 0,
        "value_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "reason": "undecodable_image",
        "message": "truncated",
        "worker_id": "w1",
        "failed_at": "2026-11-27T05:00:00+05:30",
        "source_topic": "images",
        "source_partition": 0,
        "source_offset": 7,
    }


def _valid_truncated_dead() -> dict[str, Any]:
    part = {"field": "original_headers.x-big", "size": 5242880, "sha256": "ab" * 32}
    return {**_valid_dead(), "truncated": [part]}


def _valid_manifest() -> dict[str, Any]:
    return {
        "format_version": 1,
        "model_version": "0123456789abcdef",
        "backbone": "mobilenet_v2",
        "input_size": 224,
        "embedding_dim": 128,
        "preprocessing": {
            "input_size": 224,
            "resize": "center_crop",
            "max_encoded_bytes": 1000,
            "max_pixels": 1000,
            "min_side": 16,
        },
        "distance": "squared_l2",
        "vote": {"k": 5, "weighting": "similarity", "threshold": 0.5},
        "training": {},
        "evaluation": {},
        "created_at": "2026-11-27T05:00:00.5Z",
        "keras_version": "3.15.1",
    }


def _without(document: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != key}


def _with(document: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(document))
    *parents, last = path.split(".")
    target = copy
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[int(last) if isinstance(target, list) else last] = value
    return copy


def _without_part_key(key: str) -> dict[str, Any]:
    document = _valid_truncated_dead()
    del document["truncated"][0][key]
    return document


VALID = {
    "tag": _valid_tag(),
    "dead": _valid_dead(),
    "dead (truncated)": _valid_truncated_dead(),
    "manifest": _valid_manifest(),
}
VALIDATORS = {"tag": TAG, "dead": DEAD, "dead (truncated)": DEAD, "manifest": MANIFEST}

INVALID: list[tuple[str, str, dict[str, Any]]] = [
    ("tag", "missing tagged_at", _without(_valid_tag(), "tagged_at")),
    ("tag", "extra key", {**_valid_tag(), "colour": "red"}),
    ("tag", "confidence above 1", _with(_valid_tag(), "confidence", 1.01)),
    ("tag", "confidence as string", _with(_valid_tag(), "confidence", "0.5")),
    ("tag", "negative distance", _with(_valid_tag(), "neighbours.0.distance", -0.1)),
    ("tag", "distance above 4", _with(_valid_tag(), "neighbours.0.distance", 4.01)),
    ("tag", "landmark without name", _with(_valid_tag(), "landmark", {"landmark_id": "a"})),
    ("tag", "empty image id", _with(_valid_tag(), "image_id", "")),
    ("tag", "schema version 2", _with(_valid_tag(), "schema_version", "2")),
    ("tag", "naive timestamp", _with(_valid_tag(), "tagged_at", "2026-11-27T05:00:00")),
    ("tag", "month 13", _with(_valid_tag(), "tagged_at", "2026-13-01T05:00:00Z")),
    ("tag", "date only", _with(_valid_tag(), "published_at", "2026-11-27")),
    ("tag", "negative latency", _with(_valid_tag(), "latency_ms", -1)),
    ("tag", "version with slash", _with(_valid_tag(), "model_version", "a/b")),
    ("tag", "neighbours not array", _with(_valid_tag(), "neighbours", {})),
    ("dead", "unknown reason", _with(_valid_dead(), "reason", "gremlins")),
    ("dead", "short sha256", _with(_valid_dead(), "value_sha256", "abc")),
    ("dead", "negative size", _with(_valid_dead(), "value_size", -1)),
    ("dead", "fractional offset", _with(_valid_dead(), "source_offset", 1.5)),
    ("dead", "offset below -1", _with(_valid_dead(), "source_offset", -2)),
    ("dead", "header value not string", _with(_valid_dead(), "original_headers", {"a": 1})),
    ("dead", "base64 with bad characters", _with(_valid_dead(), "value_base64", "!!")),
    ("dead", "empty message", _with(_valid_dead(), "message", "")),
    ("dead", "missing worker id", _without(_valid_dead(), "worker_id")),
    ("dead", "truncated not array", _with(_valid_dead(), "truncated", {})),
    ("dead", "truncated entry without sha256", _without_part_key("sha256")),
    (
        "dead",
        "truncated entry with empty field",
        _with(_valid_truncated_dead(), "truncated.0.field", ""),
    ),
    (
        "dead",
        "truncated entry with long field",
        _with(_valid_truncated_dead(), "truncated.0.field", "f" * 257),
    ),
    (
        "dead",
        "truncated entry with negative size",
        _with(_valid_truncated_dead(), "truncated.0.size", -1),
    ),
    (
        "dead",
        "truncated entry with short sha256",
        _with(_valid_truncated_dead(), "truncated.0.sha256", "ab"),
    ),
    (
        "dead",
        "truncated entry with extra key",
        _with(_valid_truncated_dead(), "truncated.0.why", "x"),
    ),
    ("manifest", "unknown distance", _with(_valid_manifest(), "distance", "cosine")),
    ("manifest", "format version 2", _with(_valid_manifest(), "format_version", 2)),
    ("manifest", "k zero", _with(_valid_manifest(), "vote.k", 0)),
    ("manifest", "unknown weighting", _with(_valid_manifest(), "vote.weighting", "majority")),
    ("manifest", "unknown resize", _with(_valid_manifest(), "preprocessing.resize", "stretch")),
    ("manifest", "input size as string", _with(_valid_manifest(), "input_size", "224")),
    ("manifest", "training not object", _with(_valid_manifest(), "training", [])),
    ("manifest", "long model version", _with(_valid_manifest(), "model_version", "x" * 65)),
    ("manifest", "extra preprocessing key", _with(_valid_manifest(), "preprocessing.mean", 0)),
    ("manifest", "missing vote", _without(_valid_manifest(), "vote")),
]


@pytest.mark.parametrize("kind", sorted(VALID))
def test_hand_written_valid_example_passes_schema_and_code(kind: str) -> None:
    VALIDATORS[kind].validate(VALID[kind])
    PARSERS[kind](json.dumps(VALID[kind]).encode("utf-8"))


@pytest.mark.parametrize(
    ("kind", "document"), [(k, d) for k, _, d in INVALID], ids=[f"{k}: {n}" for k, n, _ in INVALID]
)
def test_invalid_example_fails_schema_and_code(kind: str, document: dict[str, Any]) -> None:
    assert not VALIDATORS[kind].is_valid(document)
    with pytest.raises(InputError):
        PARSERS[kind](json.dumps(document).encode("utf-8"))


REFERENCE_INVALID: list[tuple[str, dict[str, Any]]] = [
    ("missing uri", {"image_id": "img-1"}),
    ("extra key", {"image_id": "img-1", "uri": "file:///a.jpg", "size": 3}),
    ("ftp scheme", {"image_id": "img-1", "uri": "ftp://host/a.jpg"}),
    ("space in uri", {"image_id": "img-1", "uri": "file:///a b.jpg"}),
    ("uri not string", {"image_id": "img-1", "uri": ["file:///a.jpg"]}),
    ("control character in id", {"image_id": "img\n1", "uri": "file:///a.jpg"}),
    ("empty id", {"image_id": "", "uri": "file:///a.jpg"}),
]


def test_hand_written_reference_passes_schema_and_code() -> None:
    document = {"image_id": "img-1", "uri": "https://photos.example/a.jpg"}
    REFERENCE.validate(document)
    assert isinstance(_reference_parse(document), PhotoReference)


@pytest.mark.parametrize(
    "document", [d for _, d in REFERENCE_INVALID], ids=[n for n, _ in REFERENCE_INVALID]
)
def test_invalid_reference_fails_schema_and_code(document: dict[str, Any]) -> None:
    assert not REFERENCE.is_valid(document)
    with pytest.raises(InputError):
        _reference_parse(document)
