"""The protocol's embeddings on disk: a fold's fine-tuned table, and the pretrained one, kept.

Fine-tuning a fold is the protocol's only expensive step; everything after it (whitening,
expansion, calibration, scoring) is numpy on the embeddings. The store keeps each fold's
fine-tuned embeddings of the evaluation photos, with its training summary, under a key made of
everything that determines them (the training settings, the fold's training and validation
photos, the evaluation photo list), so a later run with the same settings re-scores without
re-training and a changed setting can never read a stale table. A crashed run resumes at the
first fold it had not finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.photos import Photo
from trainer.protocol.folds import Fold
from trainer.training.run import TrainingSettings

#: Settings that do not change the embeddings (where files go, resuming, calibration, export).
_NOT_IN_KEY = (
    "output_dir",
    "resume",
    "vote",
    "whitening",
    "target_precision",
    "calibration_confidence",
)


def training_fingerprint(settings: TrainingSettings) -> dict[str, Any]:
    """The training settings that determine a fine-tuned network, as JSON-able values."""
    values = {
        field.name: getattr(settings, field.name)
        for field in dataclasses.fields(settings)
        if field.name not in _NOT_IN_KEY
    }
    cache = dataclasses.asdict(settings.cache)
    values["cache"] = {k: v for k, v in cache.items() if k not in ("cache_dir", "workers")}
    values["model"] = settings.model.to_dict()
    return json.loads(json.dumps(values, default=str, sort_keys=True))


def _paths(photos: Sequence[Photo]) -> list[str]:
    return [str(photo.path) for photo in photos]


class EmbeddingStore:
    """Fine-tuned (and pretrained) embedding tables in a folder, keyed by what made them."""

    def __init__(self, folder: Path, table_photos: Sequence[Photo]) -> None:
        self.folder = folder
        self._table = _paths(table_photos)

    def _key(self, name: str, settings: TrainingSettings, fold: Fold | None) -> str:
        material = {
            "name": name,
            "training": training_fingerprint(settings),
            "table": self._table,
            "train": _paths(fold.train) if fold else None,
            "val": _paths(fold.val) if fold else None,
        }
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
        return f"{name}-{digest[:16]}"

    def _files(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.npy", self.folder / f"{key}.json"

    def load(
        self, name: str, settings: TrainingSettings, fold: Fold | None = None
    ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The stored table and its summary, or None when there is none (or it is unreadable)."""
        array_file, summary_file = self._files(self._key(name, settings, fold))
        if not (array_file.exists() and summary_file.exists()):
            return None
        try:
            embeddings = np.load(array_file)
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if embeddings.ndim != 2 or len(embeddings) != len(self._table):
            return None
        return embeddings.astype(np.float32), summary

    def save(
        self,
        name: str,
        settings: TrainingSettings,
        embeddings: np.ndarray,
        summary: dict[str, Any],
        fold: Fold | None = None,
    ) -> Path:
        """Store a table (written to a temporary name first, so a crash leaves no half file)."""
        if len(embeddings) != len(self._table):
            raise ValueError(f"{len(embeddings)} embeddings for {len(self._table)} photos")
        self.folder.mkdir(parents=True, exist_ok=True)
        array_file, summary_file = self._files(self._key(name, settings, fold))
        partial = array_file.with_name(f"{array_file.stem}.{os.getpid()}.partial.npy")
        np.save(partial, np.asarray(embeddings, np.float32))
        summary_file.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        os.replace(partial, array_file)
        return array_file
