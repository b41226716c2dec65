"""Fine-tuning the upper stages with the triplet loss on cached frozen activations.

:func:`fine_tune` caches the frozen stages' activations of the training photos (plain and
augmented views) and of the validation photos (plain view), then runs the epoch loop of
:mod:`trainer.training.loop`: P x K batches, validation loss and hit@1 after each epoch,
checkpoints, resume, early stopping; the best epoch's weights are kept.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainer.data.photos import Photo
from trainer.model.embedding import EmbeddingParts
from trainer.training.activation_cache import ActivationCacheSettings, cached_activations
from trainer.training.loop import LabelledActivations, Log, TrainingLoop
from trainer.training.run import TrainingResult, TrainingSettings, TrainingSummary


def label_codes(photos: Sequence[Photo]) -> dict[str, int]:
    """Landmark id → integer label, in sorted id order."""
    return {landmark: code for code, landmark in enumerate(sorted({p.landmark_id for p in photos}))}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fine_tune(
    parts: EmbeddingParts,
    train_photos: Sequence[Photo],
    val_photos: Sequence[Photo],
    settings: TrainingSettings,
    log: Log = _stderr,
) -> TrainingResult:
    """Fine-tune the trainable part of ``parts`` on the photos; returns the best epoch's network.

    Args:
        parts: the embedding model's frozen and trainable parts (from
            :func:`trainer.model.embedding.build_embedding_model`).
        train_photos: training photos (at least P landmarks with 2+ photos).
        val_photos: validation photos of the same landmarks (may be empty: no early stopping).
        settings: the run's settings.
        log: where progress lines go.

    Returns:
        The parts with the trained trainable part (best validation hit@1 epoch) and a summary.

    Raises:
        ValueError: too few landmarks for P, or photos that cannot be decoded.
    """
    codes = label_codes(train_photos)
    started = time.monotonic()
    description = settings.cache_description()
    train = _load(
        parts, train_photos, codes, settings.model.input_size, settings.cache, description, log
    )
    val = _load(
        parts,
        val_photos,
        codes,
        settings.model.input_size,
        settings.plain_cache(),
        description,
        log,
    )
    summary = TrainingSummary(
        backbone=settings.model.backbone,
        input_size=settings.model.input_size,
        trainable_from=settings.model.trainable_from,
        embedding_dim=parts.embedding_dim,
        mining=settings.mining,
        margin=settings.margin,
        p=settings.p,
        k=settings.k,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        augmented_views=settings.cache.augmented_views,
        landmarks=len(codes),
        train_photos=len(train_photos),
        val_photos=len(val_photos),
        cache_seconds=round(time.monotonic() - started, 1),
        loss=settings.objective.loss,
        distillation=settings.objective.distillation,
    )
    loop = TrainingLoop(parts, train, val, settings, summary, log)
    return loop.run()


def _load(
    parts: EmbeddingParts,
    photos: Sequence[Photo],
    codes: dict[str, int],
    input_size: int,
    cache: ActivationCacheSettings,
    description: dict[str, Any],
    log: Log,
) -> LabelledActivations:
    """The cached activations and labels of ``photos`` (labels from the training ``codes``)."""
    if not photos:
        shape = (0, 1, *parts.frozen.output_shape[1:])
        return LabelledActivations(np.zeros(shape, np.float16), np.zeros(0, np.int32), [])
    unknown = sorted({p.landmark_id for p in photos} - set(codes))
    if unknown:
        raise ValueError(f"validation photos of landmarks not in training: {unknown[:5]}")

    def progress(done: int, total: int) -> None:
        if done == total or done % (cache.batch_size * 10) < cache.batch_size:
            log(
                f"caching frozen activations: {done}/{total} photos x {1 + cache.augmented_views} views"
            )

    acts = cached_activations(
        parts.frozen, [p.path for p in photos], input_size, cache, description, progress
    )
    labels = np.array([codes[p.landmark_id] for p in photos], np.int32)
    return LabelledActivations(acts, labels, [p.landmark_id for p in photos])
