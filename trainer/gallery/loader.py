"""Bulk-load reference embeddings into Milvus: a new collection per model and gallery version.

The loader embeds reference photos with an exported model and writes them into the collection
``landmarks_<model_version>_<gallery_version>`` (:func:`schemas.gallery.collection_name`).
Only when every reference is in, the index is built and the row count checks out does it move
the alias workers search (``landmarks``) to the new collection, in one ``alter_alias`` call;
workers switch over on their next refresh of the index (``MilvusReferenceIndex.refresh``).

Idempotent and resumable: a reference's id is a hash of its landmark and photo bytes
(:func:`schemas.gallery.reference_id_for`), the gallery version defaults to a hash of all the ids,
and photos whose id is already in the collection are skipped. Re-running the same load therefore
inserts nothing, and re-running an interrupted one inserts only what is missing. Photos that
cannot be read or decoded are reported and skipped.

The parts: :mod:`trainer.gallery.references` (ids, duplicates, the version),
:mod:`trainer.gallery.collection` (rows, the Milvus collection and the alias),
:mod:`trainer.gallery.insertion` (embedding batches and inserting their rows) and
:mod:`trainer.gallery.progress` (the progress display); this module puts them in order.

Measured on this machine (pymilvus 3.0.2, milvus-lite 3.2.2, 512-d): ``MilvusClient.insert``
and ``upsert`` both run at about 5,000-6,000 rows/s into Milvus Lite whatever the batch size
(500-10,000 rows); the ORM's column-wise insert is no faster; building the index first and
inserting into the loaded collection is faster end to end than indexing afterwards. Milvus Lite
has no bulk-import service, so ``insert`` of a few thousand rows per call is the fastest way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr
from pymilvus import MilvusClient

from schemas.gallery import (
    DEFAULT_ALIAS,
    DEFAULT_METRIC,
    GalleryLayout,
    IndexType,
    Metric,
    collection_name,
    collection_properties,
)
from schemas.manifest import ModelManifest
from trainer.data.photos import Photo
from trainer.gallery.collection import (
    LONG_CALL_GRPC_OPTIONS,
    GalleryCollection,
    GalleryLoadError,
    move_alias,
)
from trainer.gallery.insertion import embed_and_insert
from trainer.gallery.progress import LoadProgress, ProgressLog
from trainer.gallery.references import BadPhoto, gallery_version_of, plan_references

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


def connect(settings: GalleryLoadSettings) -> MilvusClient:
    """A Milvus client for the loader (token passed, never logged)."""
    return MilvusClient(
        uri=settings.uri,
        token=settings.token.get_secret_value(),
        timeout=settings.timeout_s,
        grpc_options=LONG_CALL_GRPC_OPTIONS,
    )


@dataclass(frozen=True)
class GalleryLoadSettings:
    """How to load a gallery.

    Attributes:
        uri: Milvus URI, or a Milvus Lite file such as ``milvus.db``.
        token: Milvus token; never logged or shown (``SecretStr``, read only by :func:`connect`).
        alias: the alias workers search.
        gallery_version: version of the reference set; None derives it from the references.
        index_type: ``FLAT`` (exact), ``HNSW`` or ``IVF_FLAT``.
        metric: ``IP`` (default: unit embeddings, the cheapest search), ``COSINE`` or ``L2``;
            all three rank unit embeddings alike.
        keep_previous: keep the collection the alias pointed to before (else drop it).
        embed_batch_size: photos embedded per model call.
        insert_batch_size: rows per Milvus insert call.
        decode_workers: photo-decoding threads.
        timeout_s: time limit of each Milvus call that moves no bulk data.
        index_timeout_s: time limit of building the index, flushing and loading (HNSW on
            100k rows took minutes on this machine).
    """

    uri: str = "milvus.db"
    token: SecretStr = field(default=SecretStr(""), repr=False)
    alias: str = DEFAULT_ALIAS
    gallery_version: str | None = None
    index_type: IndexType = "FLAT"
    metric: Metric = DEFAULT_METRIC
    keep_previous: bool = True
    embed_batch_size: int = 32
    insert_batch_size: int = 2000
    decode_workers: int = 2
    timeout_s: float = 120.0
    index_timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.embed_batch_size < 1 or self.insert_batch_size < 1 or self.decode_workers < 1:
            raise ValueError("batch sizes and decode_workers must be at least 1")
        if self.timeout_s <= 0 or self.index_timeout_s <= 0:
            raise ValueError("timeout_s and index_timeout_s must be positive")


@dataclass(frozen=True)
class GalleryLoadReport:
    """What a load did."""

    collection: str
    alias: str
    model_version: str
    gallery_version: str
    photos_listed: int
    references: int
    duplicates: int
    already_present: int
    inserted: int
    bad_photos: list[BadPhoto]
    row_count: int
    previous_collection: str | None
    previous_dropped: bool
    load_seconds: float

    @property
    def rows_per_s(self) -> float:
        """Inserted rows per second of embedding plus inserting."""
        return self.inserted / self.load_seconds if self.load_seconds > 0 else 0.0


def load_gallery(
    client: MilvusClient,
    model: keras.Model,
    manifest: ModelManifest,
    photos: Sequence[Photo],
    settings: GalleryLoadSettings,
    progress: Callable[[LoadProgress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> GalleryLoadReport:
    """Embed ``photos`` with ``model`` and make them the gallery behind ``settings.alias``.

    Args:
        client: a connected Milvus client.
        model: the exported embedding model (float32 RGB 0..255 in, unit embeddings out).
        manifest: its manifest (version, dimension, preprocessing).
        photos: the reference photos.
        settings: where and how to load.
        progress: called after every embedding batch (default: :class:`ProgressLog`).
        clock: monotonic clock (seconds).

    Returns:
        The report of the load.

    Raises:
        GalleryLoadError: no usable photo, a collection of that name from another model, or a
            row count that does not match the references; the alias is not moved then.
    """
    plan = plan_references(photos)
    if not plan.references:
        raise GalleryLoadError(f"none of the {len(photos)} photos can be read")
    gallery_version = settings.gallery_version or gallery_version_of(plan.references)
    name = collection_name(manifest.model_version, gallery_version)
    layout = GalleryLayout.with_preset(manifest.embedding_dim, settings.index_type, settings.metric)
    collection = GalleryCollection(client, name, settings.timeout_s, settings.index_timeout_s)
    created = collection.open_or_create(
        layout,
        collection_properties(manifest.model_version, gallery_version, manifest.embedding_dim),
    )
    present = set() if created else collection.reference_ids()
    planned_ids = {reference.reference_id for reference in plan.references}
    strays = present - planned_ids
    if strays:
        raise GalleryLoadError(
            f"collection {name} holds {len(strays)} references that are not in these photos; "
            "load them under another gallery version"
        )
    pending = [r for r in plan.references if r.reference_id not in present]
    logger.info(
        "gallery %s: %d photos, %d distinct references (%d duplicates, %d unreadable), "
        "%d already in %s, %d to embed",
        gallery_version,
        len(photos),
        len(plan.references),
        len(plan.duplicates),
        len(plan.bad_photos),
        len(present),
        name,
        len(pending),
    )
    started = clock()
    inserted, bad_photos = embed_and_insert(
        collection,
        model,
        manifest,
        pending,
        progress or ProgressLog(),
        clock,
        embed_batch_size=settings.embed_batch_size,
        insert_batch_size=settings.insert_batch_size,
        decode_workers=settings.decode_workers,
    )
    load_seconds = clock() - started
    bad_photos = plan.bad_photos + bad_photos
    if inserted:
        collection.flush()
        if layout.index_type != "FLAT":
            collection.reload()

    row_count = collection.row_count()
    expected = len(present) + inserted
    if row_count != expected:
        raise GalleryLoadError(
            f"collection {name} holds {row_count} rows, expected {expected}; alias not moved"
        )
    previous = move_alias(client, settings.alias, name, settings.timeout_s)
    dropped = False
    if previous is not None and previous != name and not settings.keep_previous:
        others = client.list_aliases(previous, timeout=settings.timeout_s).get("aliases", [])
        if others:
            logger.warning("previous collection %s kept: aliases %s still use it", previous, others)
        else:
            client.drop_collection(previous, timeout=settings.timeout_s)
            dropped = True
    logger.info(
        "alias %s -> %s (%d references, gallery %s); previous %s%s",
        settings.alias,
        name,
        row_count,
        gallery_version,
        previous,
        " dropped" if dropped else "",
    )
    return GalleryLoadReport(
        collection=name,
        alias=settings.alias,
        model_version=manifest.model_version,
        gallery_version=gallery_version,
        photos_listed=len(photos),
        references=len(plan.references),
        duplicates=len(plan.duplicates),
        already_present=len(present),
        inserted=inserted,
        bad_photos=bad_photos,
        row_count=row_count,
        previous_collection=previous,
        previous_dropped=dropped,
        load_seconds=load_seconds,
    )
