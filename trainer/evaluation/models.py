"""The models ``landmark-evaluate`` compares, loaded and run over the photo sets.

Loads exports (:func:`trainer.model.export.load_export`) or builds ``pretrained:<backbone>``
networks (ImageNet backbone, global average pooling, L2 normalisation), and embeds every photo set
once per preprocessing (:func:`embed_sets`). :mod:`trainer.evaluation.report` measures the
embeddings and draws the figures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schemas.manifest import ModelManifest
from schemas.preprocessing import PreprocessingSpec
from schemas.vote import VoteSettings, Weighting
from trainer.data.loading import iter_photo_batches
from trainer.data.photos import Photo

PRETRAINED_PREFIX = "pretrained:"


@dataclass(frozen=True)
class EvaluationSettings:
    """What to evaluate, on which photos, and how (built once by the command line).

    Attributes:
        models: export folders or ``pretrained:<backbone>``, each optionally ``NAME=...``.
        references: folder of landmark folders holding the reference photos.
        queries: folder of landmark folders holding the query photos.
        out: output folder.
        batch_size: photos per forward pass.
        workers: photo decoding threads.
        input_size: input size of pretrained networks (None: see :func:`load_models`).
        cache_dir: cache root of pretrained weights (None: the default cache).
        vote_k, vote_weighting, vote_threshold: override the vote settings of every model
            (None: the export manifest's, or :class:`VoteSettings` defaults for pretrained).
        grid_queries: queries in the retrieval grid (of different landmarks).
        grid_neighbours: references shown per query in the grid.
        seed: seed of the grid's choice of queries.
    """

    models: tuple[str, ...]
    references: Path
    queries: Path
    out: Path
    batch_size: int = 32
    workers: int = 2
    input_size: int | None = None
    cache_dir: Path | None = None
    vote_k: int | None = None
    vote_weighting: Weighting | None = None
    vote_threshold: float | None = None
    grid_queries: int = 6
    grid_neighbours: int = 5
    seed: int = 0


@dataclass
class EvaluatedModel:
    """A model to evaluate: how to feed it, and its embeddings once computed."""

    name: str
    model: Any
    spec: PreprocessingSpec
    vote: VoteSettings
    description: dict[str, Any]
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    embed_seconds: float = 0.0


def parse_model_argument(text: str) -> tuple[str, str]:
    """``NAME=WHAT`` or ``WHAT`` → (name, what), where WHAT is an export folder or
    ``pretrained:<backbone>``; without a name, the folder's name or WHAT itself is the name.

    Raises:
        ValueError: the name or WHAT is empty.
    """
    name, sep, what = text.partition("=")
    if not sep:
        name, what = "", text
    if not what or (sep and not name):
        raise ValueError(f"model {text!r}: expected NAME=WHAT or WHAT")
    if not name:
        name = what if what.startswith(PRETRAINED_PREFIX) else Path(what).name or what
    return name, what


def _vote_settings(base: VoteSettings, settings: EvaluationSettings) -> VoteSettings:
    """The export's decision rule (or the default one), with the evaluation's overrides."""
    return VoteSettings(
        rule=base.rule,
        k=settings.vote_k if settings.vote_k is not None else base.k,
        weighting=settings.vote_weighting
        if settings.vote_weighting is not None
        else base.weighting,
        threshold=(
            settings.vote_threshold if settings.vote_threshold is not None else base.threshold
        ),
    )


def load_models(settings: EvaluationSettings) -> list[EvaluatedModel]:
    """Load the exports and build the pretrained networks ``settings.models`` name.

    A pretrained network takes ``settings.input_size`` if given, else the input size of an export of
    the same backbone among the models (so both see the same pixels), else its own default.
    """
    parsed = [parse_model_argument(text) for text in settings.models]
    names = [name for name, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must differ (use NAME=...): {names}")
    exports = {
        what: _load_export(Path(what))
        for _, what in parsed
        if not what.startswith(PRETRAINED_PREFIX)
    }
    models = []
    for name, what in parsed:
        if what in exports:
            model, manifest = exports[what]
            description = {
                "source": str(Path(what).resolve()),
                "backbone": manifest.backbone,
                "model_version": manifest.model_version,
                "embedding_dim": manifest.embedding_dim,
                "training": manifest.training,
            }
            models.append(
                EvaluatedModel(
                    name,
                    model,
                    manifest.preprocessing,
                    _vote_settings(manifest.vote, settings),
                    description,
                )
            )
            continue
        backbone = what.removeprefix(PRETRAINED_PREFIX)
        manifests = [manifest for _, manifest in exports.values()]
        input_size = pretrained_input_size(backbone, settings.input_size, manifests)
        model, input_size = _pretrained(backbone, input_size, settings.cache_dir)
        description = {
            "source": what,
            "backbone": backbone,
            "embedding_dim": int(model.output_shape[-1]),
        }
        models.append(
            EvaluatedModel(
                name,
                model,
                PreprocessingSpec(input_size=input_size),
                _vote_settings(VoteSettings(), settings),
                description,
            )
        )
    return models


def _load_export(directory: Path) -> tuple[Any, ModelManifest]:
    """``load_export``, with Keras' deserialisation failures (TypeError with a page-long
    config dump) turned into a one-line ValueError naming the export."""
    from trainer.model.export import load_export

    try:
        return load_export(directory)
    except TypeError as error:
        reason = str(error).rsplit("Exception encountered:", 1)[-1].strip()
        raise ValueError(f"cannot load the model in {directory}: {reason[:400]}") from error


def pretrained_input_size(
    backbone: str, requested: int | None, exports: Sequence[ModelManifest]
) -> int | None:
    """Input size of a pretrained network: the one requested, else that of the first export
    of the same backbone (so both networks see the same pixels), else None (its own)."""
    if requested:
        return requested
    same = [manifest.input_size for manifest in exports if manifest.backbone == backbone]
    return same[0] if same else None


def _pretrained(backbone: str, input_size: int | None, cache_dir: Path | None) -> tuple[Any, int]:
    """The ImageNet backbone, all frozen, + global average pooling + L2 normalisation."""
    from trainer.backbones import BACKBONES
    from trainer.model.embedding import EmbeddingModelConfig, assemble, build_embedding_model

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; known: {sorted(BACKBONES)}")
    size = input_size or BACKBONES[backbone].input_size
    config = EmbeddingModelConfig(backbone, size, embedding_dim=None, trainable_from=None)
    parts = build_embedding_model(config, "imagenet", cache_dir=cache_dir)
    return assemble(parts, name=f"pretrained_{backbone}"), size


def embed_sets(
    models: Sequence[EvaluatedModel], sets: dict[str, list[Photo]], batch_size: int, workers: int
) -> dict[str, list[tuple[Path, str, str]]]:
    """Embed every photo set with every model, decoding each photo once per preprocessing.

    Returns:
        Per set, the photos that failed (path, reason, message). Their rows are dropped from
        every model's embeddings, so all models are measured on the same photos.
    """
    from trainer.model.embedding import embed_photos

    by_spec: dict[PreprocessingSpec, list[EvaluatedModel]] = {}
    for model in models:
        by_spec.setdefault(model.spec, []).append(model)
    failures: dict[str, dict[Path, tuple[str, str]]] = {name: {} for name in sets}
    for set_name, photos in sets.items():
        paths = [photo.path for photo in photos]
        for spec, group in by_spec.items():
            dim = {m.name: int(m.model.output_shape[-1]) for m in group}
            rows = {m.name: np.full((len(paths), dim[m.name]), np.nan, np.float32) for m in group}
            for batch in iter_photo_batches(paths, spec, batch_size, workers):
                for path, error in batch.failures:
                    failures[set_name][path] = (error.reason.value, error.message)
                for model in group:
                    started = time.perf_counter()
                    rows[model.name][batch.ok_indices] = embed_photos(
                        model.model, batch.images, batch_size
                    )
                    model.embed_seconds += time.perf_counter() - started
            for model in group:
                model.embeddings[set_name] = rows[model.name]
    for set_name, photos in sets.items():
        keep = np.asarray([photo.path not in failures[set_name] for photo in photos], dtype=bool)
        for model in models:
            model.embeddings[set_name] = model.embeddings[set_name][keep]
    return {name: [(p, *why) for p, why in failed.items()] for name, failed in failures.items()}
