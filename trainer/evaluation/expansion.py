"""Query-side and gallery-side expansion of unit embeddings: alpha-QE and database-side augmentation.

Both come from the landmark-retrieval literature (Radenović, Tolias and Chum, "Fine-tuning CNN
image retrieval with no human annotation", 2018):

* **alpha-query expansion** replaces a query by the normalised sum of itself and its ``n`` nearest
  gallery vectors, each weighted by its similarity to the query raised to the power ``alpha``;
* **database-side augmentation** (DBA) does the same to every gallery vector with its ``n``
  nearest *other* gallery vectors, once, when the gallery is loaded.

Pure numpy on L2-normalised rows; :class:`Expansion` bundles both so that a scorer applies the
gallery side to whatever gallery it searches and the query side against that gallery.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def _expand(
    vectors: np.ndarray, gallery: np.ndarray, n: int, alpha: float, skip_self: bool
) -> np.ndarray:
    """Each row plus its ``n`` nearest gallery rows weighted by ``max(sim, 0) ** alpha``."""
    vectors = np.asarray(vectors, np.float32)
    gallery = np.asarray(gallery, np.float32)
    available = len(gallery) - (1 if skip_self else 0)
    n = min(n, available)
    if n <= 0 or not len(vectors):
        return vectors.copy()
    similarity = vectors @ gallery.T
    if skip_self:
        np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, n - 1, axis=1)[:, :n]
    weights = np.maximum(np.take_along_axis(similarity, nearest, axis=1), 0.0) ** alpha
    expanded = vectors + np.einsum("qn,qnd->qd", weights, gallery[nearest])
    return _normalise(expanded)


def alpha_query_expansion(
    queries: np.ndarray, gallery: np.ndarray, n: int = 2, alpha: float = 3.0
) -> np.ndarray:
    """alpha-QE: each query averaged with its ``n`` nearest gallery vectors (weights ``sim**alpha``).

    Args:
        queries: ``(q, d)`` unit embeddings.
        gallery: ``(g, d)`` unit embeddings the queries are searched in.
        n: neighbours added to each query (0 returns the queries unchanged).
        alpha: the power of the similarity weights (0: plain average query expansion).
    """
    return _expand(queries, gallery, n, alpha, skip_self=False)


def database_augmentation(gallery: np.ndarray, n: int = 1, alpha: float = 3.0) -> np.ndarray:
    """DBA: each gallery vector averaged with its ``n`` nearest other gallery vectors."""
    return _expand(gallery, gallery, n, alpha, skip_self=True)


@dataclass(frozen=True)
class Expansion:
    """Which expansions to apply, and their neighbours and power (0 neighbours: off).

    Attributes:
        query_neighbours: ``n`` of alpha-QE.
        gallery_neighbours: ``n`` of DBA.
        alpha: the similarity power of both.
    """

    query_neighbours: int = 0
    gallery_neighbours: int = 0
    alpha: float = 3.0

    def __post_init__(self) -> None:
        if self.query_neighbours < 0 or self.gallery_neighbours < 0:
            raise ValueError("expansion neighbours must not be negative")
        if self.alpha < 0:
            raise ValueError(f"expansion alpha must not be negative, got {self.alpha}")

    def gallery(self, embeddings: np.ndarray) -> np.ndarray:
        """The gallery as searched: database-side augmented when asked for."""
        if not self.gallery_neighbours:
            return np.asarray(embeddings, np.float32)
        return database_augmentation(embeddings, self.gallery_neighbours, self.alpha)

    def queries(self, queries: np.ndarray, searched_gallery: np.ndarray) -> np.ndarray:
        """The queries as searched in ``searched_gallery``: alpha-expanded when asked for."""
        if not self.query_neighbours:
            return np.asarray(queries, np.float32)
        return alpha_query_expansion(queries, searched_gallery, self.query_neighbours, self.alpha)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NO_EXPANSION = Expansion()
