"""In-memory source, sink, model and gallery, for unit tests of the worker loop.

The source is an images topic read by one member of a consumer group: positions, committed offsets,
rewinds and rebalances behave as with Kafka, and errors can be injected into polls and commits.
The sink records what it was asked to publish and can fail a number of times. All of them write
what happened, in order, to a shared journal, so that a test can check what came before what.
Model and gallery are the colour fakes of :mod:`worker_fakes` with a manifest and versions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from kafka.errors import CommitFailedError, KafkaTimeoutError, MessageSizeTooLargeError
from worker_fakes import ColourIndex, MeanColourEmbedder

from schemas.dead_letter import DeadLetter
from schemas.errors import InputError, ReasonCode
from schemas.kafka_record import KafkaRecord
from schemas.manifest import ModelManifest
from schemas.preprocessing import PreprocessingSpec
from schemas.tag_event import TagEvent
from schemas.vote import VoteSettings
from worker.adapters.kafka import PublishError, first_offsets, next_offsets
from worker.ports import Partition

INPUT_SIZE = 16


class MemorySource:
    """An images topic in memory, read from the held partitions' positions.

    Args:
        records: The topic's records (any partitions; offsets ascending within each).
        journal: Where commits and closing are written down.
        max_polls: A poll beyond this many fails the test (a loop that never stops).

    Attributes:
        committed: The committed offset of each partition (one past the last record done).
        poll_errors: Raised, first first, by the next polls.
        commit_errors: Raised, first first, by the next commits.
        on_poll: Called at the start of every poll.
        on_idle: Called when a poll finds nothing left to read (typically the service's ``stop``).
        reachable: What ``broker_reachable`` answers.
    """

    def __init__(
        self, records: Sequence[KafkaRecord], journal: list[str], max_polls: int = 100
    ) -> None:
        self._topic: dict[Partition, list[KafkaRecord]] = {}
        for record in records:
            self._topic.setdefault((record.topic, record.partition), []).append(record)
        self._assigned = frozenset(self._topic)
        self._positions = {p: batch[0].offset for p, batch in self._topic.items()}
        self._journal = journal
        self._max_polls = max_polls
        self.committed: dict[Partition, int] = {}
        self.poll_errors: list[Exception] = []
        self.commit_errors: list[Exception] = []
        self.on_poll: Callable[[], None] | None = None
        self.on_idle: Callable[[], None] | None = None
        self.reachable = True
        self._generation = 0
        self.polls = 0
        self.rewinds = 0
        self.closed = False

    @property
    def assigned(self) -> frozenset[Partition]:
        return self._assigned

    def poll_batch(self, max_records: int, max_wait_ms: int) -> list[KafkaRecord]:
        self.polls += 1
        if self.polls > self._max_polls:
            raise AssertionError(f"the loop polled {self.polls} times without stopping")
        if self.on_poll is not None:
            self.on_poll()
        if self.poll_errors:
            raise self.poll_errors.pop(0)
        batch: list[KafkaRecord] = []
        for partition in sorted(self._assigned):
            unread = [r for r in self._topic[partition] if r.offset >= self._positions[partition]]
            batch += unread[: max_records - len(batch)]
        for partition, offset in next_offsets(batch).items():
            self._positions[partition] = offset
        if not batch and self.on_idle is not None:
            self.on_idle()
        return batch

    def commit(self, records: Sequence[KafkaRecord]) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        offsets = next_offsets(records)
        if not set(offsets) <= self._assigned:
            raise CommitFailedError()
        self.committed.update(offsets)
        self._journal.append(f"committed {_offsets_text(offsets)}")

    def rewind(self, records: Sequence[KafkaRecord]) -> None:
        self.rewinds += 1
        for partition, offset in first_offsets(records).items():
            if partition in self._assigned:
                self._positions[partition] = offset

    @property
    def generation(self) -> int:
        return self._generation

    def rebalance(self, assigned: frozenset[Partition]) -> None:
        """The group revoked every partition and assigned ``assigned`` (kafka-python's eager
        protocol): each resumes from its committed offset."""
        self._generation += 1
        for partition in assigned:
            first = self._topic[partition][0].offset
            self._positions[partition] = self.committed.get(partition, first)
        self._assigned = assigned

    def lag(self) -> dict[Partition, int]:
        return {
            p: sum(1 for r in self._topic[p] if r.offset >= self._positions[p])
            for p in sorted(self._assigned)
        }

    def broker_reachable(self) -> bool:
        return self.reachable

    def close(self) -> None:
        self.closed = True
        self._journal.append("source closed")


class MemorySink:
    """Keeps what it publishes; the first ``failures`` publishes raise :class:`PublishError`.

    Attributes:
        attempts: The image ids (tag events, then dead letters' keys) of every publish call.
        tag_events: The tag events acknowledged.
        dead_letters: The dead letters acknowledged.
        on_publish: Called at the start of every publish.
        refuse: An image id (or dead letter key) whose output the sink refuses, with any
            outputs published along with it, as a broker refuses a record too large for it.
        refuse_with: The Kafka error given as the refusal's cause.
        refuse_stand_ins: Refuse the minimal ``output_refused`` dead letter of ``refuse`` too.
    """

    def __init__(self, journal: list[str], failures: int = 0) -> None:
        self._journal = journal
        self._failures_left = failures
        self.attempts: list[list[str | None]] = []
        self.tag_events: list[TagEvent] = []
        self.dead_letters: list[DeadLetter] = []
        self.on_publish: Callable[[], None] | None = None
        self.refuse: str | None = None
        self.refuse_with: Exception = MessageSizeTooLargeError()
        self.refuse_stand_ins = False
        self.closed = False

    def publish(self, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]) -> None:
        ids: list[str | None] = [e.image_id for e in tag_events]
        ids += [d.original_key for d in dead_letters]
        self.attempts.append(ids)
        if self.on_publish is not None:
            self.on_publish()
        if self._failures_left > 0:
            self._failures_left -= 1
            # as the Kafka adapter reports a broker that does not acknowledge in time
            raise PublishError(f"{len(ids)} outputs not acknowledged") from KafkaTimeoutError()
        refused = [e.image_id for e in tag_events] + [
            d.original_key
            for d in dead_letters
            if self.refuse_stand_ins or d.reason is not ReasonCode.OUTPUT_REFUSED
        ]
        if self.refuse is not None and self.refuse in refused:
            raise PublishError(f"{self.refuse} refused") from self.refuse_with
        self.tag_events += tag_events
        self.dead_letters += dead_letters
        self._journal.append(f"published {' '.join(map(str, ids))}")

    def close(self, timeout_s: float = 10.0) -> None:
        self.closed = True
        self._journal.append("sink closed")


class SlowFetcher:
    """A photo host that never answers: each fetch hangs until cut short, then fails.

    Attributes:
        started: Set once a fetch has started.
        hang_s: Longest a fetch hangs if nobody cuts it (a fetcher's own deadline).
    """

    def __init__(self, hang_s: float = 5.0) -> None:
        self.started = threading.Event()
        self._cut = threading.Event()
        self.hang_s = hang_s

    def fetch(self, uri: str) -> bytes:
        self.started.set()
        self._cut.wait(self.hang_s)
        raise InputError(ReasonCode.REFERENCE_UNREACHABLE, f"{uri} did not answer")

    def abort_in_flight(self) -> None:
        self._cut.set()


def colour_manifest(model_version: str) -> ModelManifest:
    """A manifest for the mean-colour model."""
    return ModelManifest(
        model_version=model_version,
        backbone="mean-colour",
        input_size=INPUT_SIZE,
        embedding_dim=MeanColourEmbedder.embedding_dim,
        preprocessing=PreprocessingSpec(input_size=INPUT_SIZE),
        vote=VoteSettings(k=3, weighting="similarity", threshold=0.5, rule="weighted_knn"),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        keras_version="none",
    )


class ColourModel(MeanColourEmbedder):
    """The mean-colour embedder as a served model of a given version."""

    def __init__(self, model_version: str = "model-a") -> None:
        super().__init__()
        self.model_version = model_version
        self.manifest = colour_manifest(model_version)


class ColourGallery(ColourIndex):
    """The colour index as a gallery built with one model; ``refresh`` never finds a new one."""

    def __init__(self, journal: list[str], model_version: str, gallery_version: str) -> None:
        super().__init__()
        self._journal = journal
        self.model_version = model_version
        self.gallery_version = gallery_version
        self.closed = False

    def check_compatible(self, model_version: str, embedding_dim: int) -> None:
        if (model_version, embedding_dim) != (self.model_version, MeanColourEmbedder.embedding_dim):
            raise ValueError(f"{self.gallery_version} was built with model {self.model_version}")

    def refresh(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self._journal.append(f"{self.gallery_version} closed")


def _offsets_text(offsets: dict[Partition, int]) -> str:
    return " ".join(
        f"{topic}-{partition}@{offset}" for (topic, partition), offset in offsets.items()
    )
