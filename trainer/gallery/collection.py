"""One gallery collection in Milvus: schema, rows, index, counts, and the alias workers search.

The collection layout is the contract in :mod:`schemas.gallery`; this module turns a reference
into a row of that layout, creates, reopens, counts, fills and indexes a collection of it, and
moves an alias between collections.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from schemas.gallery import (
    FIELD_EMBEDDING,
    FIELD_LANDMARK_ID,
    FIELD_LANDMARK_NAME,
    FIELD_REFERENCE_ID,
    FIELD_SOURCE,
    LANDMARK_ID_MAX_LENGTH,
    LANDMARK_NAME_MAX_LENGTH,
    PROPERTY_EMBEDDING_DIM,
    PROPERTY_MODEL_VERSION,
    REFERENCE_ID_MAX_LENGTH,
    SOURCE_MAX_LENGTH,
    GalleryLayout,
)
from trainer.gallery.references import Reference

logger = logging.getLogger(__name__)


#: gRPC keepalive for calls that run for minutes (index builds): the Milvus Lite server, like
#: any gRPC server with default settings, answers pings more often than every 5 minutes on a
#: quiet connection with GOAWAY "too_many_pings", which pymilvus (pinging every 10 s) turns
#: into UNAVAILABLE and a retry of a call that is still running.
LONG_CALL_GRPC_OPTIONS: dict[str, int] = {"grpc.keepalive_time_ms": 360_000}


class GalleryLoadError(Exception):
    """The load cannot go on: the target collection belongs to another model, counts disagree."""


def _truncate_utf8(text: str, max_bytes: int) -> str:
    """Milvus VARCHAR limits count bytes; cut on a character boundary."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def reference_row(reference: Reference, embedding: np.ndarray) -> dict[str, Any]:
    """The Milvus row of one reference."""
    photo = reference.photo
    return {
        FIELD_REFERENCE_ID: reference.reference_id,
        FIELD_LANDMARK_ID: photo.landmark_id,
        FIELD_LANDMARK_NAME: _truncate_utf8(photo.landmark_name, LANDMARK_NAME_MAX_LENGTH),
        FIELD_EMBEDDING: np.asarray(embedding, dtype=np.float32),
        FIELD_SOURCE: _truncate_utf8(str(photo.path), SOURCE_MAX_LENGTH),
    }


def gallery_schema(layout: GalleryLayout, description: str) -> Any:
    """The Milvus schema of a gallery collection (see :mod:`schemas.gallery`)."""
    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False, description=description
    )
    schema.add_field(
        FIELD_REFERENCE_ID, DataType.VARCHAR, is_primary=True, max_length=REFERENCE_ID_MAX_LENGTH
    )
    schema.add_field(FIELD_LANDMARK_ID, DataType.VARCHAR, max_length=LANDMARK_ID_MAX_LENGTH)
    schema.add_field(FIELD_LANDMARK_NAME, DataType.VARCHAR, max_length=LANDMARK_NAME_MAX_LENGTH)
    schema.add_field(FIELD_EMBEDDING, DataType.FLOAT_VECTOR, dim=layout.embedding_dim)
    schema.add_field(FIELD_SOURCE, DataType.VARCHAR, max_length=SOURCE_MAX_LENGTH)
    return schema


class GalleryCollection:
    """One gallery collection in Milvus, with the operations the loader needs."""

    def __init__(
        self, client: MilvusClient, name: str, timeout_s: float, index_timeout_s: float = 3600.0
    ) -> None:
        self.client = client
        self.name = name
        self.timeout_s = timeout_s
        self.index_timeout_s = index_timeout_s

    def open_or_create(self, layout: GalleryLayout, properties: dict[str, str]) -> bool:
        """Create the collection (with its index, loaded) or reopen it to resume a load.

        Returns:
            True when the collection was created now.

        Raises:
            GalleryLoadError: an existing collection of this name holds another model's
                embeddings or another dimension.
        """
        created = False
        if self.client.has_collection(self.name, timeout=self.timeout_s):
            self._check_existing(properties)
        else:
            description = ", ".join(f"{key}={value}" for key, value in properties.items())
            self.client.create_collection(
                self.name,
                schema=gallery_schema(layout, f"landmark reference gallery: {description}"),
                properties=properties,
                timeout=self.timeout_s,
            )
            created = True
        existing = self.client.list_indexes(self.name, field_name=FIELD_EMBEDDING)
        if existing:
            info = self.client.describe_index(self.name, existing[0], timeout=self.timeout_s)
            kept = (str(info.get("index_type", "")).upper(), str(info.get("metric_type", "")))
            if kept != (layout.index_type, layout.metric):
                logger.warning(
                    "collection %s keeps its %s index on %s; %s on %s applies to new gallery "
                    "versions",
                    self.name,
                    *kept,
                    layout.index_type,
                    layout.metric,
                )
        else:
            self.create_index(layout)
        self.client.load_collection(self.name, timeout=self.index_timeout_s)
        return created

    def create_index(self, layout: GalleryLayout) -> None:
        """Build the vector index (tolerating a retry of a build that had in fact succeeded)."""
        index_params = self.client.prepare_index_params()
        index_params.add_index(FIELD_EMBEDDING, index_name=FIELD_EMBEDDING, **layout.index_spec())
        try:
            self.client.create_index(self.name, index_params, timeout=self.index_timeout_s)
        except MilvusException:
            if not self.client.list_indexes(self.name, field_name=FIELD_EMBEDDING):
                raise

    def _check_existing(self, properties: dict[str, str]) -> None:
        info = self.client.describe_collection(self.name, timeout=self.timeout_s)
        found = info.get("properties") or {}
        for key in (PROPERTY_MODEL_VERSION, PROPERTY_EMBEDDING_DIM):
            if str(found.get(key)) != properties[key]:
                raise GalleryLoadError(
                    f"collection {self.name} exists with {key}={found.get(key)!r}, "
                    f"this load has {key}={properties[key]!r}; drop it or pick another "
                    "gallery version"
                )

    def row_count(self) -> int:
        """Rows in the collection, counted with strong consistency."""
        result = self.client.query(
            self.name,
            filter="",
            output_fields=["count(*)"],
            consistency_level="Strong",
            timeout=self.timeout_s,
        )
        return int(result[0]["count(*)"])

    def reference_ids(self, batch_size: int = 10_000) -> set[str]:
        """Every reference id already in the collection."""
        if self.row_count() == 0:
            return set()
        ids: set[str] = set()
        iterator = self.client.query_iterator(
            self.name, batch_size=batch_size, filter="", output_fields=[FIELD_REFERENCE_ID]
        )
        try:
            while rows := iterator.next():
                ids.update(str(row[FIELD_REFERENCE_ID]) for row in rows)
        finally:
            iterator.close()
        return ids

    def insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert rows (the caller has skipped ids already present)."""
        self.client.insert(self.name, rows, timeout=self.timeout_s)

    def flush(self) -> None:
        """Seal what was inserted into segments: durable, and indexed by the vector index.

        Milvus Lite keeps up to 128 MiB of fresh rows in a memory table that it searches by
        brute force; only flushed segments get the HNSW or IVF index.
        """
        self.client.flush(self.name, timeout=self.index_timeout_s)

    def reload(self) -> None:
        """Release and load again: Milvus Lite builds missing segment indexes while loading.

        (After a flush it builds them in the background; until then those segments are
        searched by brute force. Reloading before the alias moves means workers get the
        approximate index they asked for from their first search.)
        """
        self.client.release_collection(self.name, timeout=self.index_timeout_s)
        self.client.load_collection(self.name, timeout=self.index_timeout_s)


def alias_target(client: MilvusClient, alias: str, timeout_s: float) -> str | None:
    """The collection an alias points to, None when the alias does not exist."""
    # Listing first: describing a missing alias makes pymilvus log an error with a traceback.
    if alias not in client.list_aliases(timeout=timeout_s).get("aliases", []):
        return None
    info = client.describe_alias(alias, timeout=timeout_s)
    return str(info.get("collection_name") or "") or None


def move_alias(client: MilvusClient, alias: str, collection: str, timeout_s: float) -> str | None:
    """Point ``alias`` at ``collection`` in one call (create or alter).

    Returns:
        The collection the alias pointed to before (None if it did not exist).
    """
    previous = alias_target(client, alias, timeout_s)
    if previous is None:
        client.create_alias(collection, alias, timeout=timeout_s)
    elif previous != collection:
        client.alter_alias(collection, alias, timeout=timeout_s)
    return previous
