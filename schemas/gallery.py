"""The reference gallery's layout in Milvus: fields, metric, index, naming and the alias."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from schemas.errors import schema_violation
from schemas.json_fields import check_integer

#: The alias workers search; the gallery loader moves it to a new collection when it is ready.
DEFAULT_ALIAS = "landmarks"
COLLECTION_PREFIX = "landmarks"

FIELD_REFERENCE_ID = "reference_id"
FIELD_LANDMARK_ID = "landmark_id"
FIELD_LANDMARK_NAME = "landmark_name"
FIELD_EMBEDDING = "embedding"
FIELD_SOURCE = "source"

REFERENCE_ID_MAX_LENGTH = 64
LANDMARK_ID_MAX_LENGTH = 128
LANDMARK_NAME_MAX_LENGTH = 256
SOURCE_MAX_LENGTH = 1024
#: Fields a search returns besides the distance.
OUTPUT_FIELDS: tuple[str, ...] = (FIELD_LANDMARK_ID, FIELD_LANDMARK_NAME)

#: Collection properties (and description keys) the worker checks against its model manifest.
PROPERTY_MODEL_VERSION = "model_version"
PROPERTY_GALLERY_VERSION = "gallery_version"
PROPERTY_EMBEDDING_DIM = "embedding_dim"

Metric = Literal["COSINE", "IP", "L2"]
IndexType = Literal["FLAT", "HNSW", "IVF_FLAT"]
METRICS: tuple[str, ...] = get_args(Metric)
#: The metric of the galleries the loader builds. Embeddings are unit vectors (the loader
#: normalises what it stores; the worker refuses query rows off by more than
#: :data:`UNIT_NORM_TOLERANCE`), so the inner product ranks as the cosine does, and Milvus does
#: not recompute every reference's norm on each search: the real Milvus 2.3 server spent 0.86
#: instead of 1.73 ms of CPU a query at 5,000 references, 0.10 instead of 0.20 at 300
#: (``bench/bench_search.py``, same neighbours and distances).
DEFAULT_METRIC: Metric = "IP"
#: Largest deviation from 1 of an embedding's norm that still counts as a unit vector.
UNIT_NORM_TOLERANCE = 1e-2
INDEX_TYPES: tuple[str, ...] = get_args(IndexType)

#: Build parameters per index type.
INDEX_PRESETS: dict[str, dict[str, int]] = {
    "FLAT": {},
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 1024},
}
HNSW_MIN_EF = 64
IVF_NPROBE = 32
MAX_COLLECTION_NAME_LENGTH = 255
_NOT_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_]")


def _default_index_params() -> dict[str, Any]:
    return dict(INDEX_PRESETS["FLAT"])


@dataclass(frozen=True)
class GalleryLayout:
    """How reference embeddings are stored and indexed.

    Attributes:
        embedding_dim: Length of each embedding (the model manifest's ``embedding_dim``).
        metric: Milvus metric; embeddings are unit vectors, so ``COSINE``, ``IP`` and ``L2``
            rank alike (``IP`` is the cheapest to search).
        index_type: ``FLAT`` (exact), ``HNSW`` or ``IVF_FLAT``.
        index_params: Index build parameters (see :data:`INDEX_PRESETS`).
    """

    embedding_dim: int
    metric: Metric = DEFAULT_METRIC
    index_type: IndexType = "FLAT"
    index_params: dict[str, Any] = field(default_factory=_default_index_params)

    def __post_init__(self) -> None:
        check_integer(self.embedding_dim, "gallery.embedding_dim", minimum=1, maximum=32768)
        if self.metric not in METRICS:
            raise schema_violation(f"gallery.metric: {self.metric!r} is not one of {METRICS}")
        if self.index_type not in INDEX_TYPES:
            raise schema_violation(
                f"gallery.index_type: {self.index_type!r} is not one of {INDEX_TYPES}"
            )

    @classmethod
    def with_preset(
        cls, embedding_dim: int, index_type: IndexType = "FLAT", metric: Metric = DEFAULT_METRIC
    ) -> GalleryLayout:
        """Build a layout with the preset parameters for ``index_type``.

        Args:
            embedding_dim: Length of each embedding.
            index_type: ``FLAT``, ``HNSW`` or ``IVF_FLAT``.
            metric: The Milvus metric.

        Returns:
            The layout.
        """
        if index_type not in INDEX_PRESETS:
            raise schema_violation(
                f"gallery.index_type: {index_type!r} is not one of {INDEX_TYPES}"
            )
        return cls(embedding_dim, metric, index_type, dict(INDEX_PRESETS[index_type]))

    def index_spec(self) -> dict[str, Any]:
        """Return the index definition: ``{"index_type", "metric_type", "params"}``."""
        return {
            "index_type": self.index_type,
            "metric_type": self.metric,
            "params": dict(self.index_params),
        }


def search_params(layout: GalleryLayout, k: int) -> dict[str, Any]:
    """Return the search parameters for ``k`` neighbours: ``{"metric_type", "params"}``.

    HNSW searches with ``ef = max(64, k)``; IVF_FLAT probes 32 lists (or all, if fewer);
    FLAT needs no parameters.

    Args:
        layout: The gallery layout.
        k: How many neighbours are requested.

    Returns:
        The search parameters.
    """
    check_integer(k, "k", minimum=1)
    params: dict[str, Any] = {}
    if layout.index_type == "HNSW":
        params["ef"] = max(HNSW_MIN_EF, k)
    elif layout.index_type == "IVF_FLAT":
        nlist = int(layout.index_params.get("nlist", INDEX_PRESETS["IVF_FLAT"]["nlist"]))
        params["nprobe"] = min(IVF_NPROBE, nlist)
    return {"metric_type": layout.metric, "params": params}


def collection_name(model_version: str, gallery_version: str) -> str:
    """Name the collection for one model and gallery version.

    Args:
        model_version: The model manifest's version.
        gallery_version: The gallery's version.

    Returns:
        ``landmarks_<model_version>_<gallery_version>`` with every character outside
        ``[A-Za-z0-9_]`` replaced by ``_``.

    Raises:
        InputError: ``schema_violation`` when a version is empty or the name is too long.
    """
    if not model_version or not gallery_version:
        raise schema_violation("collection name: model and gallery versions must not be empty")
    name = f"{COLLECTION_PREFIX}_{model_version}_{gallery_version}"
    name = _NOT_NAME_CHARACTER.sub("_", name)
    if len(name) > MAX_COLLECTION_NAME_LENGTH:
        raise schema_violation(
            f"collection name: {len(name)} characters, Milvus allows {MAX_COLLECTION_NAME_LENGTH}"
        )
    return name


def collection_properties(
    model_version: str, gallery_version: str, embedding_dim: int
) -> dict[str, str]:
    """Return the collection properties the worker checks before searching.

    Args:
        model_version: The model manifest's version.
        gallery_version: The gallery's version.
        embedding_dim: Length of each embedding.

    Returns:
        Property name → string value.
    """
    return {
        PROPERTY_MODEL_VERSION: model_version,
        PROPERTY_GALLERY_VERSION: gallery_version,
        PROPERTY_EMBEDDING_DIM: str(embedding_dim),
    }


def reference_id_for(landmark_id: str, photo_bytes: bytes) -> str:
    """Derive a stable reference id from the landmark and the photo's bytes.

    Args:
        landmark_id: The landmark the photo shows.
        photo_bytes: The encoded photo.

    Returns:
        The first 32 hex digits of sha256(landmark_id, NUL, photo bytes).
    """
    digest = hashlib.sha256()
    digest.update(landmark_id.encode("utf-8"))
    digest.update(b"\0")
    digest.update(photo_bytes)
    return digest.hexdigest()[:32]


def cosine_to_squared_l2(similarity: float) -> float:
    """Convert cosine similarity of unit vectors to squared Euclidean distance.

    Args:
        similarity: Cosine similarity (what Milvus returns for ``COSINE``, and for ``IP`` of
            unit vectors).

    Returns:
        ``2 - 2 * similarity``, clamped to [0, 4] against rounding.
    """
    return min(4.0, max(0.0, 2.0 - 2.0 * float(similarity)))
