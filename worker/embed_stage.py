"""The embedding stage of a batch: one call for the batch, photo by photo when that fails.

A photo the model cannot embed (an exception, or a row that is not a finite unit vector) fails
alone; the others of its batch are embedded. Photos decoded on an accelerator are stacked there
(:func:`stack_images`), not copied through the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas.dead_letter import DeadLetter
from schemas.errors import ReasonCode
from schemas.gallery import UNIT_NORM_TOLERANCE
from worker.decode_stage import Decoded, Rejected
from worker.outcome import Answers
from worker.ports import Embedder


@dataclass(frozen=True)
class Embedded:
    """A batch embedded, not yet searched.

    Attributes:
        photos: The photos that embedded, in order.
        embeddings: Their ``(n, dim)`` unit embeddings, row by row.
        dead_letters: The records that could not be decoded or embedded, answered.
        model_version: The model that embedded them.
        decode_s, embed_s: Seconds spent preparing and embedding the batch.
    """

    photos: tuple[Decoded, ...]
    embeddings: np.ndarray
    dead_letters: tuple[DeadLetter, ...]
    model_version: str
    decode_s: float
    embed_s: float


def embed_prepared(
    prepared: Sequence[Decoded | Rejected],
    *,
    embedder: Embedder,
    answers: Answers,
    decode_s: float,
    timer: Callable[[], float] = time.perf_counter,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> Embedded:
    """Embed the decoded photos of a batch in one call; rejections and failures are answered."""
    decoded = [item for item in prepared if isinstance(item, Decoded)]
    dead_letters = [
        answers.dead_letter(item.record, item.error.reason, item.error.message)
        for item in prepared
        if isinstance(item, Rejected)
    ]
    on_stage("embed")
    started = timer()  # the embed stage's seconds: not the rejections' dead letters
    embeddings, failed = embed_batch(embedder, decoded)
    for item, message in failed:
        dead_letters.append(answers.dead_letter(item.record, ReasonCode.EMBEDDING_FAILED, message))
    failed_ids = {id(item) for item, _ in failed}
    return Embedded(
        photos=tuple(item for item in decoded if id(item) not in failed_ids),
        embeddings=embeddings,
        dead_letters=tuple(dead_letters),
        model_version=embedder.model_version,
        decode_s=decode_s,
        embed_s=timer() - started,
    )


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
    unit: np.ndarray = finite & (np.abs(norms - 1.0) <= UNIT_NORM_TOLERANCE)
    return unit
