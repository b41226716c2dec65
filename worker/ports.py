"""Every interface the worker's core and loop are written against.

The core (:mod:`worker.core`) sees the model, the reference gallery and the photo store only
through :class:`Embedder`, :class:`ReferenceIndex`, :class:`PhotoFetcher` and an optional
:class:`BatchDecoder`; the loop
(:mod:`worker.service`) also needs what a served model, a refreshable gallery, the image source and
the output sink can do (:class:`ServedModel`, :class:`Gallery`, :class:`Source`, :class:`Sink`).
Unit tests drive both with in-memory implementations; the real adapters
(:mod:`worker.adapters.keras_embedder`, :mod:`worker.adapters.milvus`,
:mod:`worker.adapters.photo_fetcher`, :mod:`worker.adapters.kafka`) stay thin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from schemas.dead_letter import DeadLetter
from schemas.kafka_record import KafkaRecord
from schemas.manifest import ModelManifest
from schemas.preprocessing import PreprocessingSpec
from schemas.tag_event import Neighbour, TagEvent

#: A partition of a topic: ``(topic, partition number)``.
Partition = tuple[str, int]


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

    def abort_in_flight(self) -> None:
        """Cut short the fetches in progress (each then fails as ``reference_unreachable``)."""
        ...


class BatchDecoder(Protocol):
    """Decodes the photos of a batch at once, on an accelerator; the CPU path takes the rest.

    Implemented by :class:`worker.adapters.gpu_decode.GpuPhotoDecoder`.
    """

    def takes(self, data: bytes, spec: PreprocessingSpec) -> bool:
        """Whether it decodes ``data`` for ``spec`` as the CPU path would (else the CPU path)."""
        ...

    def decode(self, photos: Sequence[bytes], spec: PreprocessingSpec) -> list[Any]:
        """Per photo: the model input (an ``(S, S, 3)`` uint8 array, possibly on the
        accelerator), an :class:`~schemas.errors.InputError`, or None to decode it on the CPU."""
        ...


class ServedModel(Embedder, Protocol):
    """An embedder that knows its manifest: the preprocessing it expects, the vote's defaults.

    Implemented by :class:`worker.adapters.keras_embedder.KerasEmbedder`.
    """

    manifest: ModelManifest


class Gallery(ReferenceIndex, Protocol):
    """A reference index that can be checked and refreshed.

    Implemented by :class:`worker.adapters.milvus.MilvusReferenceIndex`.
    """

    def check_compatible(self, model_version: str, embedding_dim: int) -> None:
        """Check the gallery against a model and remember the model for :meth:`refresh`.

        Raises:
            Exception: the gallery was built with another model or dimension
                (``GalleryMismatchError`` for Milvus).
        """
        ...

    def refresh(self) -> bool:
        """Switch to the gallery the alias points to now; True when it switched.

        Raises:
            Exception: the new gallery does not fit the model, or the store cannot be reached;
                the index keeps searching the previous gallery.
        """
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class Source(Protocol):
    """The image records of the partitions this worker holds.

    Implemented by :class:`worker.adapters.kafka.ImageConsumer`.
    """

    @property
    def assigned(self) -> frozenset[Partition]:
        """Partitions held now."""
        ...

    @property
    def generation(self) -> int:
        """How many times partitions were revoked so far (positions are reset each time)."""
        ...

    def poll_batch(self, max_records: int, max_wait_ms: int) -> list[KafkaRecord]:
        """Read up to ``max_records``, waiting at most ``max_wait_ms`` for the batch to fill."""
        ...

    def commit(self, records: Sequence[KafkaRecord]) -> None:
        """Commit one past the highest offset of each partition in ``records``.

        Raises:
            kafka.errors.CommitFailedError: the group rebalanced and the partitions moved on.
            kafka.errors.KafkaError: the commit could not be made.
        """
        ...

    def rewind(self, records: Sequence[KafkaRecord]) -> None:
        """Seek back to the first offset of each still-held partition in ``records``."""
        ...

    def lag(self) -> dict[Partition, int]:
        """Records between this worker's position and the end of each held partition."""
        ...

    def broker_reachable(self) -> bool:
        """Whether the broker answered the consumer recently (without a call of its own)."""
        ...

    def close(self) -> None:
        """Leave the group."""
        ...


class Sink(Protocol):
    """Where a batch's outputs go.

    Implemented by :class:`worker.adapters.kafka.OutputPublisher`.
    """

    def publish(self, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]) -> None:
        """Send every output and return once the broker has acknowledged all of them.

        Raises:
            Exception: some output was not acknowledged (``PublishError`` for Kafka).
        """
        ...

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending and close."""
        ...


class RebalancingSource(Source, Protocol):
    """A source whose partitions can be paused, repositioned and told of rebalances.

    Exactly-once delivery needs it (:mod:`worker.delivery.exactly_once`). Implemented by
    :class:`worker.adapters.kafka.ImageConsumer`.
    """

    def set_rebalance_hooks(
        self,
        on_revoked: Callable[[], None],
        on_assigned: Callable[[frozenset[Partition]], None],
    ) -> None:
        """Be told (inside :meth:`poll_batch`) before partitions are revoked and once new ones
        are assigned."""
        ...

    def pause(self, partitions: Iterable[Partition]) -> None:
        """Stop fetching from ``partitions``."""
        ...

    def resume(self, partitions: Iterable[Partition]) -> None:
        """Fetch from ``partitions`` again."""
        ...

    def committed(self, partition: Partition, timeout_s: float) -> int | None:
        """The group's committed offset of ``partition``, asked of the broker (None: none)."""
        ...

    def seek_to(self, partition: Partition, offset: int | None) -> None:
        """Read ``partition`` from ``offset`` next (None: where a new group starts)."""
        ...

    def request_rejoin(self) -> None:
        """Rejoin the group at the next poll."""
        ...


class TransactionFailed(Exception):
    """A partition's transaction was not committed.

    Attributes:
        partition: The input partition.
        fenced: Another producer holds the partition's transactional id now (the partition has
            most likely moved to another worker): nothing of the transaction is visible.
        in_doubt: The commit was sent but not answered in time: it may or may not have
            happened (the partition's next producer finds out).
        producer_closed: The producer cannot be used again (fenced, in doubt, or in a state
            no abort could end); the partition needs a new one.
    """

    def __init__(
        self,
        partition: Partition,
        message: str,
        *,
        fenced: bool = False,
        in_doubt: bool = False,
        producer_closed: bool = False,
    ) -> None:
        super().__init__(message)
        self.partition = partition
        self.fenced = fenced
        self.in_doubt = in_doubt
        self.producer_closed = producer_closed or fenced or in_doubt


class PartitionTransactions(Protocol):
    """The transactional producer of one input partition: its outputs and the group's offset
    of the partition, committed together.

    Implemented by :class:`worker.adapters.kafka.transactions.PartitionProducer`.
    """

    @property
    def closed(self) -> bool:
        """True once it cannot be used again."""
        ...

    def commit(
        self, next_offset: int, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]
    ) -> None:
        """Publish the outputs and commit ``next_offset`` in one transaction.

        Raises:
            TransactionFailed: not committed (unless ``in_doubt``).
        """
        ...

    def trial(self, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]) -> None:
        """Publish the outputs in a transaction that is then aborted (does the broker take them?).

        Raises:
            TransactionFailed: the broker refused them.
        """
        ...

    def close(self, timeout_s: float = 5.0) -> None:
        """Close; a transaction left open is ended by the partition's next producer."""
        ...
