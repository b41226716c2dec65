"""Model manifests: JSON round trips, files on disk, rejection of malformed documents."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from schema_strategies import manifests

from schemas.errors import InputError, ReasonCode
from schemas.manifest import MANIFEST_FILE, ModelManifest, model_version_of
from schemas.preprocessing import PreprocessingSpec
from schemas.vote import VoteSettings


def _manifest(**changes: object) -> ModelManifest:
    fields: dict[str, object] = {
        "model_version": "0123456789abcdef",
        "backbone": "mobilenet_v2",
        "input_size": 224,
        "embedding_dim": 128,
        "preprocessing": PreprocessingSpec(),
        "vote": VoteSettings(),
        "created_at": datetime(2026, 11, 27, tzinfo=UTC),
        "keras_version": "3.15.1",
        "training": {"photos": 3195, "landmarks": 39},
        "evaluation": {"hit_at_1": 0.81},
    }
    fields.update(changes)
    return ModelManifest(**fields)  # type: ignore[arg-type]


@given(manifests)
def test_manifest_round_trips(manifest: ModelManifest) -> None:
    assert ModelManifest.from_json_bytes(manifest.to_json_bytes()) == manifest


def test_write_then_read_gives_the_same_manifest(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest.write(tmp_path)
    assert ModelManifest.read(tmp_path) == manifest


def test_write_leaves_only_the_manifest(tmp_path: Path) -> None:
    _manifest().write(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILE]


def test_model_version_is_first_16_hex_of_sha256(tmp_path: Path) -> None:
    model_file = tmp_path / "model.keras"
    model_file.write_bytes(b"weights" * 1000)
    assert model_version_of(model_file) == hashlib.sha256(b"weights" * 1000).hexdigest()[:16]


def test_input_size_must_match_preprocessing() -> None:
    with pytest.raises(InputError, match=r"differs from preprocessing\.input_size"):
        _manifest(input_size=299)


def test_unknown_distance_is_refused() -> None:
    with pytest.raises(InputError, match="distance"):
        _manifest(distance="manhattan")


def test_non_json_training_summary_is_refused() -> None:
    with pytest.raises(InputError, match="training"):
        _manifest(training={"when": datetime(2026, 1, 1, tzinfo=UTC)})


def test_unknown_weighting_in_document_is_refused() -> None:
    document = json.loads(_manifest().to_json_bytes())
    document["vote"]["weighting"] = "majority"
    with pytest.raises(InputError) as caught:
        ModelManifest.from_json_bytes(json.dumps(document).encode())
    assert caught.value.reason is ReasonCode.SCHEMA_VIOLATION
    assert "vote.weighting" in caught.value.message


def test_missing_preprocessing_field_is_refused() -> None:
    document = json.loads(_manifest().to_json_bytes())
    del document["preprocessing"]["min_side"]
    with pytest.raises(InputError, match="missing required key 'min_side'"):
        ModelManifest.from_json_bytes(json.dumps(document).encode())


def test_read_of_folder_without_manifest_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ModelManifest.read(tmp_path)
