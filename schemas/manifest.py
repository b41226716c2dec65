"""The model manifest that travels with an exported model (``manifest.json`` beside ``model.keras``).

Described by ``schemas/json/model-manifest.schema.json``. The worker trusts nothing about a model
that the manifest does not say: input size and preprocessing, embedding size, distance, vote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas.errors import schema_violation
from schemas.json_fields import (
    JsonObject,
    check_integer,
    check_keys,
    check_object,
    check_text,
    check_timestamp,
    dump_json,
    load_json_object,
)
from schemas.preprocessing import PreprocessingSpec
from schemas.timestamps import format_rfc3339, require_utc
from schemas.vote import VoteSettings

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT_VERSION = 1
#: Squared Euclidean distance between unit embeddings; the only distance the vote understands.
DISTANCES: tuple[str, ...] = ("squared_l2",)
MODEL_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_CHUNK = 1 << 20

_KEYS = (
    "format_version",
    "model_version",
    "backbone",
    "input_size",
    "embedding_dim",
    "preprocessing",
    "distance",
    "vote",
    "training",
    "evaluation",
    "created_at",
    "keras_version",
)


def _check_json_object(value: object, where: str) -> dict[str, Any]:
    obj = check_object(value, where)
    try:
        dump_json(obj)
    except (TypeError, ValueError) as error:  # UnicodeEncodeError (surrogates) is a ValueError
        raise schema_violation(f"{where}: not serialisable as JSON ({error})") from None
    return obj


@dataclass(frozen=True, kw_only=True)
class ModelManifest:
    """What an exported embedding model is and how to use it.

    Attributes:
        model_version: Content hash of the model file (:func:`model_version_of`).
        backbone: Backbone name (e.g. ``mobilenet_v2``).
        input_size: Side of the square RGB input; equals ``preprocessing.input_size``.
        embedding_dim: Length of the unit-norm embedding.
        preprocessing: How photos become model input.
        distance: ``squared_l2`` between unit embeddings.
        vote: Default k, weighting and threshold for the kNN vote.
        training: Training-data summary (free-form JSON object).
        evaluation: Evaluation figures (free-form JSON object).
        created_at: When the model was exported.
        keras_version: The Keras version that saved the model.
        format_version: The manifest format version.
    """

    model_version: str
    backbone: str
    input_size: int
    embedding_dim: int
    preprocessing: PreprocessingSpec
    vote: VoteSettings
    created_at: datetime
    keras_version: str
    distance: str = "squared_l2"
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    format_version: int = MANIFEST_FORMAT_VERSION

    def __post_init__(self) -> None:
        where = "manifest"
        if self.format_version != MANIFEST_FORMAT_VERSION:
            raise schema_violation(
                f"{where}.format_version: {self.format_version!r} is not {MANIFEST_FORMAT_VERSION}"
            )
        check_text(self.model_version, f"{where}.model_version", pattern=MODEL_VERSION_PATTERN)
        check_text(self.backbone, f"{where}.backbone", max_length=128)
        check_integer(self.input_size, f"{where}.input_size", minimum=8, maximum=4096)
        check_integer(self.embedding_dim, f"{where}.embedding_dim", minimum=1, maximum=32768)
        if not isinstance(self.preprocessing, PreprocessingSpec):
            raise schema_violation(f"{where}.preprocessing: expected a PreprocessingSpec")
        if self.preprocessing.input_size != self.input_size:
            raise schema_violation(
                f"{where}: input_size {self.input_size} differs from preprocessing.input_size "
                f"{self.preprocessing.input_size}"
            )
        if self.distance not in DISTANCES:
            raise schema_violation(f"{where}.distance: {self.distance!r} is not one of {DISTANCES}")
        if not isinstance(self.vote, VoteSettings):
            raise schema_violation(f"{where}.vote: expected VoteSettings")
        _check_json_object(self.training, f"{where}.training")
        _check_json_object(self.evaluation, f"{where}.evaluation")
        object.__setattr__(self, "created_at", require_utc(self.created_at, f"{where}.created_at"))
        check_text(self.keras_version, f"{where}.keras_version", max_length=64)

    def to_dict(self) -> JsonObject:
        """Return the JSON object for this manifest."""
        return {
            "format_version": self.format_version,
            "model_version": self.model_version,
            "backbone": self.backbone,
            "input_size": self.input_size,
            "embedding_dim": self.embedding_dim,
            "preprocessing": self.preprocessing.to_dict(),
            "distance": self.distance,
            "vote": self.vote.to_dict(),
            "training": self.training,
            "evaluation": self.evaluation,
            "created_at": format_rfc3339(self.created_at),
            "keras_version": self.keras_version,
        }

    def to_json_bytes(self) -> bytes:
        """Serialise as UTF-8 JSON that ``model-manifest.schema.json`` accepts."""
        return dump_json(self.to_dict())

    @classmethod
    def from_dict(cls, document: object) -> ModelManifest:
        """Build a manifest from its parsed JSON object, validating it.

        Args:
            document: The parsed JSON value.

        Returns:
            The manifest.

        Raises:
            InputError: ``schema_violation`` naming the first field that breaks the schema.
        """
        where = "manifest"
        obj = check_object(document, where)
        check_keys(obj, where, _KEYS)
        return cls(
            format_version=check_integer(obj["format_version"], f"{where}.format_version"),
            model_version=check_text(obj["model_version"], f"{where}.model_version"),
            backbone=check_text(obj["backbone"], f"{where}.backbone"),
            input_size=check_integer(obj["input_size"], f"{where}.input_size"),
            embedding_dim=check_integer(obj["embedding_dim"], f"{where}.embedding_dim"),
            preprocessing=PreprocessingSpec.from_dict(
                obj["preprocessing"], f"{where}.preprocessing"
            ),
            distance=check_text(obj["distance"], f"{where}.distance"),
            vote=VoteSettings.from_dict(obj["vote"], f"{where}.vote"),
            training=_check_json_object(obj["training"], f"{where}.training"),
            evaluation=_check_json_object(obj["evaluation"], f"{where}.evaluation"),
            created_at=check_timestamp(obj["created_at"], f"{where}.created_at"),
            keras_version=check_text(obj["keras_version"], f"{where}.keras_version"),
        )

    @classmethod
    def from_json_bytes(cls, data: bytes) -> ModelManifest:
        """Parse and validate a manifest.

        Args:
            data: UTF-8 JSON bytes.

        Returns:
            The manifest.

        Raises:
            InputError: ``schema_violation`` for bad JSON or a document that breaks the schema.
        """
        return cls.from_dict(load_json_object(data, "manifest"))

    def write(self, directory: Path | str) -> Path:
        """Write ``manifest.json`` into ``directory`` atomically.

        Args:
            directory: The export directory (created if missing).

        Returns:
            The manifest's path.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / MANIFEST_FILE
        fd, temporary = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(
                    json.dumps(self.to_dict(), ensure_ascii=False, indent=2).encode("utf-8")
                )
                handle.write(b"\n")
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def read(cls, directory: Path | str) -> ModelManifest:
        """Read and validate ``manifest.json`` from an export directory.

        Args:
            directory: The export directory.

        Returns:
            The manifest.

        Raises:
            FileNotFoundError: When the directory has no manifest.
            InputError: ``schema_violation`` when the manifest breaks the schema.
        """
        return cls.from_json_bytes((Path(directory) / MANIFEST_FILE).read_bytes())


def model_version_of(model_file: Path | str) -> str:
    """Return a model file's version: the first 16 hex digits of its sha256.

    Args:
        model_file: The saved model (e.g. ``model.keras``).

    Returns:
        16 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with Path(model_file).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:16]
