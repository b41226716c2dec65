"""Malformed input of every kind fails with InputError only, and code and JSON Schema agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st
from schema_strategies import (
    dead_letters,
    json_values,
    kafka_records,
    manifests,
    printable,
    tag_events,
)

from schemas import DEAD_LETTER_SCHEMA_FILE, MODEL_MANIFEST_SCHEMA_FILE, TAG_EVENT_SCHEMA_FILE
from schemas.dead_letter import DeadLetter
from schemas.errors import InputError, ReasonCode
from schemas.image_event import decode_image_event
from schemas.manifest import ModelManifest
from schemas.preprocessing import PreprocessingSpec, decode_photo
from schemas.tag_event import TagEvent

#: Rules that span several fields, which JSON Schema cannot express; the code is stricter there.
CROSS_FIELD_KEYS = {
    "dead": {"value_base64", "value_size", "value_sha256"},
    "manifest": {"input_size", "preprocessing"},
    "tag": set(),
}


def _validator(path: Any) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(path.read_text(encoding="utf-8")))


VALIDATORS = {
    "tag": _validator(TAG_EVENT_SCHEMA_FILE),
    "dead": _validator(DEAD_LETTER_SCHEMA_FILE),
    "manifest": _validator(MODEL_MANIFEST_SCHEMA_FILE),
}
PARSERS: dict[str, Callable[[bytes], object]] = {
    "tag": TagEvent.from_json_bytes,
    "dead": DeadLetter.from_json_bytes,
    "manifest": ModelManifest.from_json_bytes,
}
VALID_EXAMPLE_TAG: dict[str, Any] = {
    "schema_version": "1",
    "image_id": "img-1",
    "landmark": None,
    "confidence": 0.0,
    "neighbours": [],
    "model_version": "m1",
    "gallery_version": "g1",
    "worker_id": "w1",
    "published_at": None,
    "tagged_at": "2026-11-27T05:00:00Z",
    "latency_ms": None,
    "trace_id": None,
}
VALID_DOCUMENTS = {
    "tag": tag_events.map(lambda e: e.to_dict()),
    "dead": dead_letters.map(lambda d: d.to_dict()),
    "manifest": manifests.map(lambda m: json.loads(m.to_json_bytes())),
}


def _code_accepts(kind: str, document: object) -> bool:
    try:
        PARSERS[kind](json.dumps(document).encode("utf-8"))
    except InputError as error:
        assert error.reason is ReasonCode.SCHEMA_VIOLATION
        return False
    return True


#: Values at and just past the limits the schemas set, which random JSON rarely hits.
EDGE_VALUES: list[object] = [
    *[-2, -1, -0.5, 0, 0.5, 1, 1.0, 1.5, 2, 3.99, 4, 4.01, 7, 8, 1024, 1025, 4096, 4097, 32769],
    *["", "a", "a" * 64, "a" * 65, "a" * 256, "a" * 257, "a" * 2000, "a" * 2001, "a/b", "a b"],
    *["1", "2", "0123456789abcdef", "2026-11-27T05:00:00Z", "2026-11-27", "uniform", "pad"],
    *["undecodable_image", "squared_l2", "AAAA", "a\nb", True, None, [], {}],
]
replacement_values = st.sampled_from(EDGE_VALUES) | json_values


@st.composite
def _mutated(draw: st.DrawFn, kind: str) -> tuple[dict[str, Any], set[str]]:
    """A valid document with one key removed, added or given another value (maybe nested)."""
    document: dict[str, Any] = draw(VALID_DOCUMENTS[kind])
    target = document
    touched: set[str] = set()
    nested = [k for k, v in document.items() if isinstance(v, dict) and v]
    go_nested = draw(st.booleans())
    if nested and go_nested:
        key = draw(st.sampled_from(sorted(nested)))
        touched.add(key)
        target = document[key]
    key = draw(st.sampled_from(sorted(target)))
    touched.add(key)
    action = draw(st.sampled_from(["remove", "replace", "add"]))
    if action == "remove":
        del target[key]
    elif action == "replace":
        target[key] = draw(replacement_values)
    else:
        target[draw(printable)] = draw(replacement_values)
    return document, touched


def test_code_refuses_a_trailing_newline_where_python_regex_dollar_would_not() -> None:
    """JSON Schema patterns are ECMA 262, where ``$`` does not match before a final newline.

    Python's ``re`` (which the ``jsonschema`` library uses) does, so that library accepts
    ``"abc\\n"`` for ``^[A-Za-z0-9._-]+$``; the code follows ECMA 262 and refuses it.
    """
    document = {**VALID_EXAMPLE_TAG, "model_version": "abc\n"}
    assert not _code_accepts("tag", document)


def _check_agreement(kind: str, document: dict[str, Any], touched: set[str]) -> None:
    schema_accepts = VALIDATORS[kind].is_valid(document)
    code_accepts = _code_accepts(kind, document)
    if touched & CROSS_FIELD_KEYS[kind]:
        assert schema_accepts or not code_accepts
    else:
        assert schema_accepts == code_accepts


def _check_every_edge_value(kind: str, document: dict[str, Any]) -> None:
    """Give every key (top level and one level down) each edge value in turn, and remove it."""
    for key in sorted(document):
        parents = [(document, key, {key})]
        if isinstance(document[key], dict):
            parents += [(document[key], inner, {key, inner}) for inner in sorted(document[key])]
        for target, target_key, touched in parents:
            original = target[target_key]
            for value in EDGE_VALUES:
                target[target_key] = value
                _check_agreement(kind, document, touched)
            del target[target_key]
            _check_agreement(kind, document, touched)
            target[target_key] = original


@settings(max_examples=5, deadline=None)
@given(VALID_DOCUMENTS["tag"])
def test_code_and_schema_agree_on_edge_values_in_tag_events(document: dict[str, Any]) -> None:
    _check_every_edge_value("tag", document)


@settings(max_examples=5, deadline=None)
@given(VALID_DOCUMENTS["dead"])
def test_code_and_schema_agree_on_edge_values_in_dead_letters(document: dict[str, Any]) -> None:
    _check_every_edge_value("dead", document)


@settings(max_examples=5, deadline=None)
@given(VALID_DOCUMENTS["manifest"])
def test_code_and_schema_agree_on_edge_values_in_manifests(document: dict[str, Any]) -> None:
    _check_every_edge_value("manifest", document)


@settings(max_examples=150)
@given(_mutated("tag"))
def test_code_and_schema_agree_on_mutated_tag_events(case: tuple[dict[str, Any], set[str]]) -> None:
    _check_agreement("tag", *case)


@settings(max_examples=150)
@given(_mutated("dead"))
def test_code_and_schema_agree_on_mutated_dead_letters(
    case: tuple[dict[str, Any], set[str]],
) -> None:
    _check_agreement("dead", *case)


@settings(max_examples=150)
@given(_mutated("manifest"))
def test_code_and_schema_agree_on_mutated_manifests(
    case: tuple[dict[str, Any], set[str]],
) -> None:
    _check_agreement("manifest", *case)


@given(st.sampled_from(sorted(PARSERS)), st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_input_error(kind: str, data: bytes) -> None:
    try:
        PARSERS[kind](data)
    except InputError as error:
        assert error.reason is ReasonCode.SCHEMA_VIOLATION


@given(kafka_records)
def test_arbitrary_records_decode_or_raise_schema_violation(record: Any) -> None:
    try:
        decode_image_event(record)
    except InputError as error:
        assert error.reason is ReasonCode.SCHEMA_VIOLATION


def _small_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


SMALL_PNG = _small_png()


@settings(max_examples=200)
@given(st.data())
def test_corrupted_photos_decode_or_raise_input_error(data: st.DataObject) -> None:
    photo = bytearray(SMALL_PNG)
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        position = data.draw(st.integers(min_value=0, max_value=len(photo) - 1))
        photo[position] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(photo)))
    try:
        decoded = decode_photo(bytes(photo[:cut]), PreprocessingSpec(input_size=16))
    except InputError:
        return
    assert decoded.shape == (16, 16, 3)
