"""The small interfaces the worker's pure core is written against.

The core (:mod:`worker.core`) sees the model, the reference gallery and the photo store only
through these protocols, so that unit tests can drive it with in-memory implementations and
the real adapters (:mod:`worker.adapters.keras_embedder`, :mod:`worker.adapters.milvus`,
:mod:`worker.adapters.photo_fetcher`) stay thin.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from schemas.tag_event import Neighbour


@runtime_checkable
class Embedder(Protocol):
    """Maps a batch of preprocessed photos to unit-norm embeddings."""

    model_version: str
    embedding_dim: int

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed a batch.

        Args:
            images: ``uint8`` array of shape ``(n, S, S, 3)``, RGB.

        Returns:
            ``float32`` array of shape ``(n, embedding_dim)`` whose rows have unit length.
        """
        ...


@runtime_checkable
class ReferenceIndex(Protocol):
    """k-nearest-neighbour search over the reference gallery."""

    gallery_version: str
    model_version: str

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        """Return, for each embedding row, up to ``k`` neighbours sorted by increasing distance."""
        ...


@runtime_checkable
class PhotoFetcher(Protocol):
    """Resolves a photo reference (a URI) to the photo's bytes."""

    def fetch(self, uri: str) -> bytes:
        """Return the bytes behind ``uri``.

        Raises:
            schemas.errors.InputError: ``bad_reference`` when the URI is malformed or not allowed,
                ``reference_unreachable`` when it cannot be read.
        """
        ...
