"""The embedding stage of a batch: one call for the batch, photo by photo when that fails.

A photo the model cannot embed (an exception, or a row that is not a finite unit vector) fails
alone; the others of its batch are embedded. Photos decoded on an accelerator are stacked there
(:func:`stack_images`), not copied through the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from worker.decode_stage import Decoded
from worker.ports import Embedder

#: Largest norm deviation accepted from an embedder that promises unit rows.
_UNIT_NORM_TOLERANCE = 1e-2


def embed_batch(
    embedder: Embedder, decoded: Sequence[Decoded]
) -> tuple[np.ndarray, list[tuple[Decoded, str]]]:
    """Embed the batch in one call; if that fails, photo by photo, so one bad photo fails alone.

    Returns:
        The embeddings of the photos that embedded (in order) and the photos that did not,
        each with the reason.
    """
    dim = embedder.embedding_dim
    if not decoded:
        return np.zeros((0, dim), dtype=np.float32), []
    try:
        batch = _checked_embeddings(
            embedder.embed(stack_images([d.image for d in decoded])), len(decoded), dim
        )
    except Exception:
        batch = None
    if batch is not None:
        bad_rows = ~_unit_rows(batch)
        if not bad_rows.any():
            return batch, []
    rows: list[np.ndarray] = []
    failed: list[tuple[Decoded, str]] = []
    for position, item in enumerate(decoded):
        if batch is not None and not bad_rows[position]:
            rows.append(batch[position])
            continue
        try:
            row = _checked_embeddings(embedder.embed(item.image[np.newaxis]), 1, dim)
        except Exception as error:
            failed.append((item, f"embedding failed: {type(error).__name__}: {error}"))
            continue
        if not _unit_rows(row)[0]:
            failed.append((item, "embedding is not a finite unit vector"))
            continue
        rows.append(row[0])
    stacked = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return stacked.astype(np.float32, copy=False), failed


def stack_images(images: Sequence[Any]) -> Any:
    """One ``(n, S, S, 3)`` batch: numpy for numpy photos; else on the accelerator the photos
    came from (its array namespace), so that they are not copied through the host."""
    device = [image for image in images if not isinstance(image, np.ndarray)]
    if not device:
        return np.stack(images)
    namespace = device[0].__array_namespace__()
    return namespace.stack([namespace.asarray(image) for image in images])


def _checked_embeddings(result: np.ndarray, n: int, dim: int) -> np.ndarray:
    array = np.asarray(result, dtype=np.float32)
    if array.shape != (n, dim):
        raise ValueError(f"embedder returned shape {array.shape}, expected {(n, dim)}")
    return array


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    finite = np.isfinite(embeddings).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], embeddings, 0.0), axis=1)
    unit: np.ndarray = finite & (np.abs(norms - 1.0) <= _UNIT_NORM_TOLERANCE)
    return unit
