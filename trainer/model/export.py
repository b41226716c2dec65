"""Export of a trained embedding model: ``model.keras`` plus ``manifest.json``.

The export is the one thing (besides the Milvus collection) that passes from the trainer to the
worker. The model version is the content hash of ``model.keras``
(:func:`schemas.manifest.model_version_of`), so the same bytes always carry the same version.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras

from schemas.manifest import MANIFEST_FILE, MODEL_FILE, ModelManifest, model_version_of
from schemas.preprocessing import PreprocessingSpec
from schemas.vote import VoteSettings


def export_model(
    model: keras.Model,
    *,
    backbone: str,
    out_dir: Path,
    preprocessing: PreprocessingSpec | None = None,
    vote: VoteSettings | None = None,
    training: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> ModelManifest:
    """Save the whole embedding model and its manifest into ``out_dir``.

    Args:
        model: photo float32 RGB 0..255 ``(n, S, S, 3)`` → unit embeddings ``(n, d)``.
        backbone: backbone name.
        out_dir: the export folder (created; an existing export there is replaced).
        preprocessing: how photos become input; defaults to a centre crop at the model's size.
        vote: default kNN vote settings for the worker.
        training: training summary (JSON-serialisable; NaN/inf become null).
        evaluation: evaluation figures (JSON-serialisable; NaN/inf become null).
        created_at: export time (UTC); now by default.

    Returns:
        The manifest written.

    Raises:
        ValueError: the model's input is not square RGB, or disagrees with ``preprocessing``.
    """
    input_shape = tuple(model.input_shape[1:])
    if len(input_shape) != 3 or input_shape[0] != input_shape[1] or input_shape[2] != 3:
        raise ValueError(f"expected a square RGB model input, got {input_shape}")
    input_size = int(input_shape[0])
    preprocessing = preprocessing or PreprocessingSpec(input_size=input_size)
    if preprocessing.input_size != input_size:
        raise ValueError(
            f"preprocessing input size {preprocessing.input_size} != model input size {input_size}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_file = out_dir / MODEL_FILE
    partial = out_dir / f".{MODEL_FILE}.partial.keras"
    _inference_copy(model).save(partial)
    partial.replace(model_file)
    manifest = ModelManifest(
        model_version=model_version_of(model_file),
        backbone=backbone,
        input_size=input_size,
        embedding_dim=int(model.output_shape[-1]),
        preprocessing=preprocessing,
        vote=vote or VoteSettings(),
        created_at=created_at or datetime.now(UTC),
        keras_version=keras.__version__,
        training=_json_safe(training or {}),
        evaluation=_json_safe(evaluation or {}),
    )
    manifest.write(out_dir)
    return manifest


def _inference_copy(model: keras.Model) -> keras.Model:
    """The same network and weights without training state (loss, optimizer, metrics).

    A sub-model compiled for training would carry its loss (a ``trainer`` class) into the
    ``.keras`` file, and the worker, which never imports ``trainer``, could not load it.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def load_export(directory: Path) -> tuple[keras.Model, ModelManifest]:
    """Load an export written by :func:`export_model`.

    Returns:
        ``(model, manifest)``.

    Raises:
        FileNotFoundError: the folder lacks ``model.keras`` or ``manifest.json``.
        ValueError: the model file's hash is not the manifest's version.
    """
    directory = Path(directory)
    for name in (MODEL_FILE, MANIFEST_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a model export: {name} is missing")
    manifest = ModelManifest.read(directory)
    actual = model_version_of(directory / MODEL_FILE)
    if actual != manifest.model_version:
        raise ValueError(
            f"{directory / MODEL_FILE} has version {actual}, but the manifest says "
            f"{manifest.model_version}: the export was modified"
        )
    model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
    return model, manifest


def _json_safe(value: Any) -> Any:
    """Copy of a JSON-like value with NaN/inf floats as None and tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return _json_safe(value.item())
    if isinstance(value, Path):
        return str(value)
    return value
