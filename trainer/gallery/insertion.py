"""Embedding reference photos batch by batch and inserting their rows into the gallery collection.

The inner loop of :func:`trainer.gallery.loader.load_gallery`: photos are decoded on threads in
batches (:func:`trainer.data.loading.iter_photo_batches`), embedded with the exported model, and
their rows inserted a few thousand at a time; a photo that cannot be decoded is reported and
skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from schemas.gallery import UNIT_NORM_TOLERANCE
from schemas.manifest import ModelManifest
from trainer.data.loading import iter_photo_batches
from trainer.gallery.collection import GalleryCollection, GalleryLoadError, reference_row
from trainer.gallery.progress import LoadProgress
from trainer.gallery.references import BadPhoto, Reference

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


def embed_images(model: keras.Model, images: np.ndarray, embedding_dim: int) -> np.ndarray:
    """Embed a batch of uint8 photos as the gallery stores them: unit rows.

    Checks the shape, that every value is finite and that each row is a unit vector within
    :data:`~schemas.gallery.UNIT_NORM_TOLERANCE` (as the worker checks its queries), then
    divides each row by its norm, so that an inner-product gallery ranks as the cosine does.
    """
    embeddings = np.asarray(model.predict_on_batch(images.astype(np.float32)), dtype=np.float32)
    if embeddings.shape != (len(images), embedding_dim) or not np.all(np.isfinite(embeddings)):
        raise GalleryLoadError(
            f"the model returned {embeddings.shape} (finite: {np.all(np.isfinite(embeddings))}), "
            f"expected ({len(images)}, {embedding_dim}) finite embeddings"
        )
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    worst = float(np.max(np.abs(norms - 1.0))) if len(norms) else 0.0
    if worst > UNIT_NORM_TOLERANCE:
        raise GalleryLoadError(
            f"the model returned embeddings that are not unit vectors (a norm off by {worst:.3g}, "
            f"more than {UNIT_NORM_TOLERANCE}): export a model that L2-normalises its output"
        )
    unit: np.ndarray = embeddings / norms
    return unit


def embed_and_insert(
    collection: GalleryCollection,
    model: keras.Model,
    manifest: ModelManifest,
    pending: Sequence[Reference],
    progress: Callable[[LoadProgress], None],
    clock: Callable[[], float],
    *,
    embed_batch_size: int,
    insert_batch_size: int,
    decode_workers: int,
) -> tuple[int, list[BadPhoto]]:
    """Embed pending references batch by batch and insert their rows.

    Args:
        collection: the open gallery collection.
        model: the exported embedding model.
        manifest: its manifest (preprocessing, embedding dimension).
        pending: the references not in the collection yet.
        progress: called after every embedding batch but the last, then once at the end.
        clock: monotonic clock (seconds).
        embed_batch_size: photos embedded per model call.
        insert_batch_size: rows per insert call (at least).
        decode_workers: photo-decoding threads.

    Returns:
        ``(rows inserted, photos that could not be decoded)``.

    Raises:
        GalleryLoadError: the model returned embeddings of the wrong shape or not finite.
    """
    started = clock()
    bad: list[BadPhoto] = []
    rows: list[dict[str, Any]] = []
    inserted = 0
    handled = 0

    def insert_rows() -> None:
        nonlocal inserted, rows
        if rows:
            collection.insert(rows)
            inserted += len(rows)
            rows = []

    paths = [reference.photo.path for reference in pending]
    batches = iter_photo_batches(paths, manifest.preprocessing, embed_batch_size, decode_workers)
    for batch in batches:
        for path, error in batch.failures:
            bad.append(BadPhoto(Path(path), str(error.reason), error.message))
            logger.warning("skipped %s: %s (%s)", path, error.message, error.reason)
        if batch.ok_indices:
            embeddings = embed_images(model, batch.images, manifest.embedding_dim)
            rows.extend(
                reference_row(pending[index], embedding)
                for index, embedding in zip(batch.ok_indices, embeddings, strict=True)
            )
        handled += len(batch.ok_indices) + len(batch.failures)
        if len(rows) >= insert_batch_size:
            insert_rows()
        if handled < len(pending):
            progress(LoadProgress(handled, len(pending), inserted, clock() - started))
    insert_rows()
    progress(LoadProgress(handled, len(pending), inserted, clock() - started))
    return inserted, bad
