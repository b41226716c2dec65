"""The worker's view of the reference gallery in Milvus: batched kNN search behind an alias."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pymilvus import MilvusClient

from schemas.gallery import DEFAULT_ALIAS, FIELD_EMBEDDING, OUTPUT_FIELDS, search_params
from schemas.tag_event import Neighbour
from worker.adapters.milvus.description import (
    GalleryDescription,
    check_compatible,
    describe_gallery,
)
from worker.adapters.milvus.errors import (
    GalleryUnavailableError,
    is_collection_gone,
    is_not_loaded,
)
from worker.adapters.milvus.hits import neighbours_from_hits
from worker.adapters.milvus.retries import RetryPolicy, backoff_delays

logger = logging.getLogger(__name__)

#: pymilvus pings every 10 s; a gRPC server with default settings (Milvus Lite's) takes pings
#: on a quiet connection more often than every 5 minutes as abuse and hangs up (GOAWAY).
_GRPC_OPTIONS: dict[str, int] = {"grpc.keepalive_time_ms": 360_000}


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
        on_failure: told of every failed Milvus call (its name and the error), retried or not.

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
        on_failure: Callable[[str, BaseException], None] = lambda what, error: None,
    ) -> None:
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0")
        self._alias = alias
        self._timeout_s = timeout_s
        self._retry = RetryPolicy(backoff_delays(retries, backoff_s), sleep, alias, on_failure)
        self._expected: tuple[str, int] | None = None
        self._client = self._retry.call(
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
        results: Any = self._retry.call(
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
        info: Mapping[str, Any] = self._retry.call(
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
        info: Mapping[str, Any] = self._retry.call(
            "describe_collection",
            lambda: self._client.describe_collection(collection, timeout=self._timeout_s),
        )
        index_names: list[str] = self._retry.call(
            "list_indexes",
            lambda: self._client.list_indexes(collection, field_name=FIELD_EMBEDDING),
        )
        index_info: Mapping[str, Any] | None = None
        if index_names:
            index_info = self._retry.call(
                "describe_index",
                lambda: self._client.describe_index(
                    collection, index_names[0], timeout=self._timeout_s
                ),
            )
        return describe_gallery(self._alias, collection, info, index_info)

    def _ensure_loaded(self, collection: str) -> None:
        self._retry.call(
            "load_collection",
            lambda: self._client.load_collection(collection, timeout=self._timeout_s),
        )
