"""Bulk-load reference embeddings into Milvus: a new collection per model and gallery version.

The loader embeds reference photos with an exported model and writes them into the collection
``landmarks_<model_version>_<gallery_version>`` (:func:`schemas.gallery.collection_name`).
Only when every reference is in, the index is built and the row count checks out does it move
the alias workers search (``landmarks``) to the new collection, in one ``alter_alias`` call;
workers switch over on their next :meth:`worker.milvus_index.MilvusReferenceIndex.refresh`.

Idempotent and resumable: a reference's id is a hash of its landmark and photo bytes
(:func:`schemas.gallery.reference_id_for`), the gallery version defaults to a hash of all the ids,
and photos whose id is already in the collection are skipped. Re-running the same load therefore
inserts nothing, and re-running an interrupted one inserts only what is missing. Photos that
cannot be read or decoded are reported and skipped.

Measured on this machine (pymilvus 3.0.2, milvus-lite 3.2.2, 512-d): ``MilvusClient.insert``
and ``upsert`` both run at about 5,000-6,000 rows/s into Milvus Lite whatever the batch size
(500-10,000 rows); the ORM's column-wise insert is no faster; building the index first and
inserting into the loaded collection is faster end to end than indexing afterwards. Milvus Lite
has no bulk-import service, so ``insert`` of a few thousand rows per call is the fastest way.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from schemas.gallery import (
    DEFAULT_ALIAS,
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
    IndexType,
    collection_name,
    collection_properties,
    reference_id_for,
)
from schemas.manifest import ModelManifest
from trainer.data import Photo
from trainer.photo_loading import iter_photo_batches

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


#: gRPC keepalive for calls that run for minutes (index builds): the Milvus Lite server, like
#: any gRPC server with default settings, answers pings more often than every 5 minutes on a
#: quiet connection with GOAWAY "too_many_pings", which pymilvus (pinging every 10 s) turns
#: into UNAVAILABLE and a retry of a call that is still running.
LONG_CALL_GRPC_OPTIONS: dict[str, int] = {"grpc.keepalive_time_ms": 360_000}


def connect(settings: GalleryLoadSettings) -> MilvusClient:
    """A Milvus client for the loader (token passed, never logged)."""
    return MilvusClient(
        uri=settings.uri,
        token=settings.token,
        timeout=settings.timeout_s,
        grpc_options=LONG_CALL_GRPC_OPTIONS,
    )


class GalleryLoadError(Exception):
    """The load cannot go on: the target collection belongs to another model, counts disagree."""


@dataclass(frozen=True)
class GalleryLoadSettings:
    """How to load a gallery.

    Attributes:
        uri: Milvus URI, or a Milvus Lite file such as ``milvus.db``.
        token: Milvus token; never logged (excluded from ``repr``).
        alias: the alias workers search.
        gallery_version: version of the reference set; None derives it from the references.
        index_type: ``FLAT`` (exact), ``HNSW`` or ``IVF_FLAT``.
        keep_previous: keep the collection the alias pointed to before (else drop it).
        embed_batch_size: photos embedded per model call.
        insert_batch_size: rows per Milvus insert call.
        decode_workers: photo-decoding threads.
        timeout_s: time limit of each Milvus call that moves no bulk data.
        index_timeout_s: time limit of building the index, flushing and loading (HNSW on
            100k rows took minutes on this machine).
    """

    uri: str = "milvus.db"
    token: str = field(default="", repr=False)
    alias: str = DEFAULT_ALIAS
    gallery_version: str | None = None
    index_type: IndexType = "FLAT"
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
class Reference:
    """A photo to put in the gallery, with its stable id."""

    reference_id: str
    photo: Photo


@dataclass(frozen=True)
class BadPhoto:
    """A photo that was skipped, and why (a reason code and a message)."""

    path: Path
    reason: str
    message: str


@dataclass(frozen=True)
class ReferencePlan:
    """The distinct references of a photo list, the duplicates dropped, the unreadable files."""

    references: list[Reference]
    duplicates: list[Reference]
    bad_photos: list[BadPhoto]


@dataclass(frozen=True)
class LoadProgress:
    """Progress of the embedding and insert phase, passed to the progress callback."""

    done: int
    total: int
    inserted: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """References handled per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first reference)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def describe(self) -> str:
        """``"1200/3195 references (37.6%), 1000 inserted, 41.2/s, ETA 48 s"``."""
        share = 100.0 * self.done / self.total if self.total else 100.0
        eta = "?" if self.eta_s is None else f"{self.eta_s:.0f} s"
        return (
            f"{self.done}/{self.total} references ({share:.1f}%), {self.inserted} inserted, "
            f"{self.rate:.1f}/s, ETA {eta}"
        )


class ProgressLog:
    """The default progress display: a log line at most every ``every_s`` seconds, and at the end."""

    def __init__(self, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._last: float | None = None
        self.lines: int = 0

    def __call__(self, progress: LoadProgress) -> None:
        now = self.clock()
        finished = progress.done >= progress.total
        if not finished and self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        self.lines += 1
        logger.info("embedded %s", progress.describe())


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


def plan_references(photos: Sequence[Photo]) -> ReferencePlan:
    """Give each photo its stable reference id; drop exact duplicates and unreadable files.

    Args:
        photos: the reference photos (from :mod:`trainer.data`).

    Returns:
        Distinct references in input order, duplicates (same landmark and same bytes as an
        earlier photo), and photos that could not be read or whose landmark id is too long.
    """
    references: list[Reference] = []
    duplicates: list[Reference] = []
    bad: list[BadPhoto] = []
    seen: set[str] = set()
    for photo in photos:
        if len(photo.landmark_id.encode("utf-8")) > LANDMARK_ID_MAX_LENGTH:
            bad.append(
                BadPhoto(
                    photo.path,
                    "bad_reference",
                    f"landmark id longer than {LANDMARK_ID_MAX_LENGTH} bytes",
                )
            )
            continue
        try:
            data = Path(photo.path).read_bytes()
        except OSError as error:
            bad.append(BadPhoto(photo.path, "reference_unreachable", str(error)))
            continue
        reference = Reference(reference_id_for(photo.landmark_id, data), photo)
        if reference.reference_id in seen:
            duplicates.append(reference)
            continue
        seen.add(reference.reference_id)
        references.append(reference)
    return ReferencePlan(references, duplicates, bad)


def gallery_version_of(references: Sequence[Reference]) -> str:
    """A version that names this exact set of references: ``g`` + 12 hex of a hash of the ids."""
    digest = hashlib.sha256()
    for reference_id in sorted(reference.reference_id for reference in references):
        digest.update(reference_id.encode("ascii"))
        digest.update(b"\n")
    return "g" + digest.hexdigest()[:12]


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
            if str(info.get("index_type", "")).upper() != layout.index_type:
                logger.warning(
                    "collection %s keeps its %s index; %s applies to new gallery versions",
                    self.name,
                    info.get("index_type"),
                    layout.index_type,
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


def embed_images(model: keras.Model, images: np.ndarray, embedding_dim: int) -> np.ndarray:
    """Embed a batch of uint8 photos; checks shape and finiteness of what the model returns."""
    embeddings = np.asarray(model.predict_on_batch(images.astype(np.float32)), dtype=np.float32)
    if embeddings.shape != (len(images), embedding_dim) or not np.all(np.isfinite(embeddings)):
        raise GalleryLoadError(
            f"the model returned {embeddings.shape} (finite: {np.all(np.isfinite(embeddings))}), "
            f"expected ({len(images)}, {embedding_dim}) finite embeddings"
        )
    return embeddings


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
    layout = GalleryLayout.with_preset(manifest.embedding_dim, settings.index_type)
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
    inserted, bad_photos = _embed_and_insert(
        collection, model, manifest, pending, settings, progress or ProgressLog(), clock
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


def _embed_and_insert(
    collection: GalleryCollection,
    model: keras.Model,
    manifest: ModelManifest,
    pending: Sequence[Reference],
    settings: GalleryLoadSettings,
    progress: Callable[[LoadProgress], None],
    clock: Callable[[], float],
) -> tuple[int, list[BadPhoto]]:
    """Embed pending references batch by batch and insert them; returns (inserted, bad photos)."""
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
    batches = iter_photo_batches(
        paths, manifest.preprocessing, settings.embed_batch_size, settings.decode_workers
    )
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
        if len(rows) >= settings.insert_batch_size:
            insert_rows()
        if handled < len(pending):
            progress(LoadProgress(handled, len(pending), inserted, clock() - started))
    insert_rows()
    progress(LoadProgress(handled, len(pending), inserted, clock() - started))
    return inserted, bad
