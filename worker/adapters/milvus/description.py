"""A gallery collection as the worker sees it: what it holds and whether it fits the model.

Read from Milvus's ``describe_collection``/``describe_index`` answers (plain dictionaries), so that
it can be tested without a server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.gallery import (
    FIELD_EMBEDDING,
    INDEX_PRESETS,
    METRICS,
    PROPERTY_EMBEDDING_DIM,
    PROPERTY_GALLERY_VERSION,
    PROPERTY_MODEL_VERSION,
    GalleryLayout,
)
from worker.adapters.milvus.errors import GalleryMismatchError


@dataclass(frozen=True)
class GalleryDescription:
    """What the worker knows about the collection behind its alias.

    Attributes:
        alias: the alias searched.
        collection: the collection the alias points to.
        model_version: the model whose embeddings the collection holds.
        gallery_version: the version of the reference set.
        embedding_dim: the vector field's dimension.
        layout: metric and index of the vector field.
    """

    alias: str
    collection: str
    model_version: str
    gallery_version: str
    embedding_dim: int
    layout: GalleryLayout = field(compare=False)


def describe_gallery(
    alias: str,
    collection: str,
    collection_info: Mapping[str, Any],
    index_info: Mapping[str, Any] | None,
) -> GalleryDescription:
    """Read a gallery's description from Milvus's ``describe_collection``/``describe_index``.

    Args:
        alias: the alias that led to the collection.
        collection: the collection's real name.
        collection_info: ``MilvusClient.describe_collection`` of it.
        index_info: ``MilvusClient.describe_index`` of its vector field, None without an index.

    Returns:
        The description.

    Raises:
        GalleryMismatchError: the collection is not a landmark gallery (no vector field named
            ``embedding``, missing version properties) or its properties contradict its schema.
    """
    where = f"collection {collection!r} behind alias {alias!r}"
    dim = _vector_dim(collection_info, where)
    properties = collection_info.get("properties") or {}
    missing = [
        key
        for key in (PROPERTY_MODEL_VERSION, PROPERTY_GALLERY_VERSION)
        if not str(properties.get(key, "")).strip()
    ]
    if missing:
        raise GalleryMismatchError(
            f"{where} lacks the properties {missing}: not a gallery written by the gallery loader"
        )
    declared_dim = str(properties.get(PROPERTY_EMBEDDING_DIM, dim))
    if declared_dim != str(dim):
        raise GalleryMismatchError(
            f"{where}: property embedding_dim={declared_dim} but the vector field has dim {dim}"
        )
    return GalleryDescription(
        alias=alias,
        collection=collection,
        model_version=str(properties[PROPERTY_MODEL_VERSION]),
        gallery_version=str(properties[PROPERTY_GALLERY_VERSION]),
        embedding_dim=dim,
        layout=_layout_of(dim, index_info),
    )


def _vector_dim(collection_info: Mapping[str, Any], where: str) -> int:
    for field_info in collection_info.get("fields", ()):
        if field_info.get("name") == FIELD_EMBEDDING:
            return int(field_info.get("params", {})["dim"])
    raise GalleryMismatchError(f"{where} has no vector field {FIELD_EMBEDDING!r}")


def _layout_of(dim: int, index_info: Mapping[str, Any] | None) -> GalleryLayout:
    if not index_info:  # as the loader built galleries before IP became its default
        return GalleryLayout(dim, metric="COSINE")
    index_type = str(index_info.get("index_type", "FLAT")).upper()
    if index_type not in INDEX_PRESETS:
        # AUTOINDEX, BRUTE_FORCE, ...: searched exactly as FLAT (no search parameters).
        index_type = "FLAT"
    metric = str(index_info.get("metric_type", "COSINE")).upper()
    if metric not in METRICS:
        raise GalleryMismatchError(f"vector index metric {metric} is not one of {METRICS}")
    params = {k: v for k, v in index_info.items() if k in INDEX_PRESETS[index_type]}
    return GalleryLayout(dim, metric, index_type, params)  # type: ignore[arg-type]


def check_compatible(
    description: GalleryDescription, model_version: str, embedding_dim: int
) -> None:
    """Raise unless the gallery was built with this model (same version and dimension).

    Raises:
        GalleryMismatchError: with both sides named, so the operator knows what to reload.
    """
    if description.embedding_dim != embedding_dim:
        raise GalleryMismatchError(
            f"gallery {description.collection!r} (alias {description.alias!r}) holds "
            f"{description.embedding_dim}-dimensional embeddings, the model makes {embedding_dim}"
        )
    if description.model_version != model_version:
        raise GalleryMismatchError(
            f"gallery {description.collection!r} (alias {description.alias!r}) was built with "
            f"model {description.model_version}, the worker serves model {model_version}; "
            "load the gallery with this model (landmark-load-gallery) or serve that model"
        )
