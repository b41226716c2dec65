"""The reference gallery in Milvus, seen by the worker: batched kNN search behind an alias.

:class:`MilvusReferenceIndex` implements :class:`worker.ports.ReferenceIndex`. It searches the
collection the alias (``landmarks`` by default) points to, with **one** Milvus search call per
batch of query embeddings (Milvus Lite scans rows in Python, so a call costs about the same for
one query as for sixty-four), and returns :class:`~schemas.tag_event.Neighbour` lists sorted by
squared Euclidean distance (``2 - 2 cos`` for the unit embeddings a COSINE gallery holds).

The trainer's gallery loader moves the alias to a new collection in one step when a new
gallery is complete; :meth:`MilvusReferenceIndex.refresh` (one cheap ``describe_alias`` call,
made by the worker between batches) notices and switches over without a restart, refusing a
gallery whose model version or dimension does not match the model the worker serves.

The pure pieces (reading a collection's description, converting hits, classifying errors,
the backoff schedule) are module-level functions so that they can be tested without a server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np
from pymilvus import MilvusClient
from pymilvus.exceptions import ErrorCode, MilvusException, MilvusUnavailableException

from schemas.gallery import (
    DEFAULT_ALIAS,
    FIELD_EMBEDDING,
    FIELD_LANDMARK_ID,
    FIELD_LANDMARK_NAME,
    FIELD_REFERENCE_ID,
    INDEX_PRESETS,
    METRICS,
    OUTPUT_FIELDS,
    PROPERTY_EMBEDDING_DIM,
    PROPERTY_GALLERY_VERSION,
    PROPERTY_MODEL_VERSION,
    GalleryLayout,
    cosine_to_squared_l2,
    search_params,
)
from schemas.tag_event import Neighbour

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: gRPC status codes after which the same call may well succeed a moment later.
TRANSIENT_GRPC_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
MAX_BACKOFF_S = 10.0
#: pymilvus pings every 10 s; a gRPC server with default settings (Milvus Lite's) takes pings
#: on a quiet connection more often than every 5 minutes as abuse and hangs up (GOAWAY).
_GRPC_OPTIONS: dict[str, int] = {"grpc.keepalive_time_ms": 360_000}
#: Milvus's error code for a collection that exists but is not loaded into memory.
COLLECTION_NOT_LOADED = 101


class GalleryMismatchError(Exception):
    """The collection behind the alias does not fit the model (dimension or model version)."""


class GalleryUnavailableError(Exception):
    """Milvus could not be reached, or the alias does not exist, after all retries."""


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
    if not index_info:
        return GalleryLayout(dim)
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


def distance_of(score: float, metric: str) -> float:
    """Milvus's score for a hit as the squared Euclidean distance of unit vectors (0…4).

    COSINE and IP return a similarity (``2 - 2 s``); Milvus's L2 is already squared.
    """
    if metric == "L2":
        return min(4.0, max(0.0, float(score)))
    return cosine_to_squared_l2(score)


def neighbours_from_hits(hits: Sequence[Mapping[str, Any]], metric: str) -> list[Neighbour]:
    """Convert one query's Milvus hits to neighbours sorted by distance (then reference id).

    Args:
        hits: the hits of one query, each ``{"id"|"reference_id", "distance", "entity": {...}}``.
        metric: the collection's metric.

    Returns:
        The neighbours, nearest first.
    """
    neighbours = []
    for hit in hits:
        entity = hit.get("entity") or {}
        reference_id = hit.get(FIELD_REFERENCE_ID, hit.get("id"))
        neighbours.append(
            Neighbour(
                reference_id=str(reference_id),
                landmark_id=str(entity[FIELD_LANDMARK_ID]),
                landmark_name=str(entity[FIELD_LANDMARK_NAME]),
                distance=distance_of(float(hit["distance"]), metric),
            )
        )
    neighbours.sort(key=lambda n: (n.distance, n.reference_id))
    return neighbours


def is_transient(error: BaseException) -> bool:
    """Whether a failed Milvus call is worth retrying (server restarting, overloaded, slow)."""
    if isinstance(error, MilvusUnavailableException | ConnectionError | TimeoutError):
        return True
    if isinstance(error, grpc.RpcError):
        code = error.code() if callable(getattr(error, "code", None)) else None
        return code in TRANSIENT_GRPC_CODES
    if isinstance(error, MilvusException):
        code = error.code
        if code in TRANSIENT_GRPC_CODES or code == ErrorCode.RATE_LIMIT:
            return True
        message = str(error.message).lower()
        return any(
            hint in message
            for hint in ("unavailable", "deadline", "timeout", "connection refused", "retry")
        )
    return False


def is_collection_gone(error: BaseException) -> bool:
    """Whether the collection searched no longer exists (the alias moved and it was dropped)."""
    if not isinstance(error, MilvusException):
        return False
    message = str(error.message).lower()
    return error.code == ErrorCode.COLLECTION_NOT_FOUND or (
        "collection" in message and ("not found" in message or "not exist" in message)
    )


def is_not_loaded(error: BaseException) -> bool:
    """Whether the collection exists but is not loaded (e.g. the Milvus server restarted)."""
    if not isinstance(error, MilvusException):
        return False
    message = str(error.message).lower()
    return error.code == COLLECTION_NOT_LOADED or (
        "load" in message
        and ("released" in message or "not loaded" in message or "call load" in message)
    )


def backoff_delays(
    retries: int, backoff_s: float, max_backoff_s: float = MAX_BACKOFF_S
) -> list[float]:
    """The waits before each retry: ``backoff_s * 2**i`` capped at ``max_backoff_s``."""
    return [min(max_backoff_s, backoff_s * 2.0**attempt) for attempt in range(retries)]


class MilvusReferenceIndex:
    """kNN search over the reference gallery behind a Milvus alias.

    Args:
        uri: Milvus URI (``http://host:19530``) or a Milvus Lite ``.db`` path.
        token: Milvus token (``user:password`` or an API key); never logged.
        alias: the alias the gallery loader moves (``schemas.gallery.DEFAULT_ALIAS``).
        timeout_s: time limit of each Milvus call.
        retries: how many times a call that failed transiently is repeated.
        backoff_s: wait before the first retry; doubled for each further retry.
        sleep: how to wait (``time.sleep``), injectable so that callers can interrupt waits.

    Raises:
        GalleryUnavailableError: Milvus cannot be reached, or the alias does not exist.
        GalleryMismatchError: the collection behind the alias is not a landmark gallery.
    """

    def __init__(
        self,
        uri: str,
        token: str = "",
        alias: str = DEFAULT_ALIAS,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0")
        self._alias = alias
        self._timeout_s = timeout_s
        self._delays = backoff_delays(retries, backoff_s)
        self._sleep = sleep
        self._expected: tuple[str, int] | None = None
        self._client = self._with_retries(
            "connect",
            lambda: MilvusClient(
                uri=uri, token=token, timeout=timeout_s, grpc_options=_GRPC_OPTIONS
            ),
        )
        self._description = self._describe_alias_target()
        self._ensure_loaded(self._description.collection)
        self.model_version: str = self._description.model_version
        self.gallery_version: str = self._description.gallery_version

    @property
    def alias(self) -> str:
        return self._alias

    @property
    def embedding_dim(self) -> int:
        return self._description.embedding_dim

    def describe(self) -> GalleryDescription:
        """The description of the collection currently searched."""
        return self._description

    def check_compatible(self, model_version: str, embedding_dim: int) -> None:
        """Check the gallery against the served model and remember it for :meth:`refresh`.

        Raises:
            GalleryMismatchError: the gallery has another dimension or model version.
        """
        check_compatible(self._description, model_version, embedding_dim)
        self._expected = (model_version, embedding_dim)

    def refresh(self) -> bool:
        """Switch to the collection the alias points to now, if it moved.

        One ``describe_alias`` call when nothing changed. A new collection is checked against
        the model given to :meth:`check_compatible` before it is searched.

        Returns:
            True when the index switched to another collection.

        Raises:
            GalleryMismatchError: the alias now points to a gallery of another model; the
                index keeps searching the previous collection.
            GalleryUnavailableError: Milvus could not be reached.
        """
        target = self._alias_target()
        if target == self._description.collection:
            return False
        description = self._describe(target)
        if self._expected is not None:
            check_compatible(description, *self._expected)
        self._ensure_loaded(target)
        previous = self._description
        self._description = description
        self.model_version = description.model_version
        self.gallery_version = description.gallery_version
        logger.info(
            "gallery switched: alias %s now %s (gallery %s), was %s (gallery %s)",
            self._alias,
            target,
            description.gallery_version,
            previous.collection,
            previous.gallery_version,
        )
        return True

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        """Find the ``k`` nearest references of each embedding with one Milvus search call.

        Args:
            embeddings: ``float32`` array ``(n, embedding_dim)`` of unit rows.
            k: neighbours per query (at least 1).

        Returns:
            For each row, up to ``k`` neighbours sorted by increasing squared distance.

        Raises:
            ValueError: wrong shape, dimension or ``k``.
            GalleryUnavailableError: the search failed after all retries.
        """
        queries = np.asarray(embeddings, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embeddings must have shape (n, {self.embedding_dim}), got {queries.shape}"
            )
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if queries.shape[0] == 0:
            return []
        try:
            return self._search_collection(queries, k)
        except GalleryUnavailableError as error:
            cause = error.__cause__ or error
            if is_not_loaded(cause):
                # A restarted server comes back with its collections released.
                self._ensure_loaded(self._description.collection)
            elif is_collection_gone(cause):
                # The alias moved and the loader dropped the collection we were searching.
                self.refresh()
            else:
                raise
        return self._search_collection(queries, k)

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    def _search_collection(self, queries: np.ndarray, k: int) -> list[list[Neighbour]]:
        description = self._description
        layout = description.layout
        results: Any = self._with_retries(
            "search",
            lambda: self._client.search(
                collection_name=description.collection,
                data=queries,
                limit=k,
                anns_field=FIELD_EMBEDDING,
                output_fields=list(OUTPUT_FIELDS),
                search_params=search_params(layout, k),
                timeout=self._timeout_s,
            ),
        )
        return [neighbours_from_hits(list(hits), layout.metric) for hits in results]

    def _alias_target(self) -> str:
        info: Mapping[str, Any] = self._with_retries(
            "describe_alias",
            lambda: self._client.describe_alias(self._alias, timeout=self._timeout_s),
        )
        target = str(info.get("collection_name") or "")
        if not target:
            raise GalleryUnavailableError(f"alias {self._alias!r} points to no collection")
        return target

    def _describe_alias_target(self) -> GalleryDescription:
        return self._describe(self._alias_target())

    def _describe(self, collection: str) -> GalleryDescription:
        info: Mapping[str, Any] = self._with_retries(
            "describe_collection",
            lambda: self._client.describe_collection(collection, timeout=self._timeout_s),
        )
        index_names: list[str] = self._with_retries(
            "list_indexes",
            lambda: self._client.list_indexes(collection, field_name=FIELD_EMBEDDING),
        )
        index_info: Mapping[str, Any] | None = None
        if index_names:
            index_info = self._with_retries(
                "describe_index",
                lambda: self._client.describe_index(
                    collection, index_names[0], timeout=self._timeout_s
                ),
            )
        return describe_gallery(self._alias, collection, info, index_info)

    def _ensure_loaded(self, collection: str) -> None:
        self._with_retries(
            "load_collection",
            lambda: self._client.load_collection(collection, timeout=self._timeout_s),
        )

    def _with_retries(self, what: str, call: Callable[[], T]) -> T:
        for attempt in range(len(self._delays) + 1):
            try:
                return call()
            except Exception as error:
                if not is_transient(error) or attempt == len(self._delays):
                    raise GalleryUnavailableError(
                        f"Milvus {what} failed for alias {self._alias!r} "
                        f"after {attempt + 1} attempt(s): {error}"
                    ) from error
                delay = self._delays[attempt]
                logger.warning(
                    "Milvus %s failed (%s), retry %d/%d in %.2f s",
                    what,
                    type(error).__name__,
                    attempt + 1,
                    len(self._delays),
                    delay,
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
