"""The exactly-once delivery's work on one input partition's part of a batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from schemas.dead_letter import DeadLetter
from schemas.kafka_record import KafkaRecord
from schemas.tag_event import TagEvent
from worker.adapters.kafka import next_offsets
from worker.isolation import IsolatingPublisher
from worker.outcome import BatchOutcome
from worker.ports import Partition, PartitionTransactions, TransactionFailed


class TrialSink:
    """A sink whose publish is an aborted trial transaction of one partition's producer."""

    def __init__(self, producer: PartitionTransactions) -> None:
        self._producer = producer

    def publish(self, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]) -> None:
        self._producer.trial(tag_events, dead_letters)

    def close(self, timeout_s: float = 10.0) -> None:
        return None


def joined(outcome: BatchOutcome, parts: list[BatchOutcome]) -> BatchOutcome:
    """The parts' outputs as one batch's (stage timings are the batch's)."""
    return BatchOutcome(
        tag_events=tuple(e for p in parts for e in p.tag_events),
        dead_letters=tuple(d for p in parts for d in p.dead_letters),
        stage_timings=outcome.stage_timings,
        tag_event_sources=tuple(s for p in parts for s in p.tag_event_sources),
    )


class Isolators:
    """One :class:`IsolatingPublisher` of trial transactions a partition, kept while its
    producer lives (its count of failures in a row is the partition's).

    Args:
        **settings: :class:`IsolatingPublisher`'s keyword arguments.
    """

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._by_partition: dict[Partition, IsolatingPublisher] = {}

    def publisher(
        self, partition: Partition, producer: PartitionTransactions
    ) -> IsolatingPublisher:
        found = self._by_partition.get(partition)
        if found is None:
            found = IsolatingPublisher(TrialSink(producer), **self._settings)
            self._by_partition[partition] = found
        return found

    def forget(self, partition: Partition) -> None:
        self._by_partition.pop(partition, None)

    def clear(self) -> None:
        self._by_partition.clear()


def commit_part(
    producer: PartitionTransactions,
    partition: Partition,
    part: list[KafkaRecord],
    outcome: BatchOutcome,
    *,
    isolating: Callable[[], IsolatingPublisher],
    on_aborted: Callable[[], None],
) -> BatchOutcome:
    """Commit the outputs of ``part`` with its partition's next offset; return what was committed.

    When the transaction is aborted (the producer still usable), the outputs are tried again in
    aborted trial transactions (``isolating``'s publisher over a :class:`TrialSink`), which finds
    a record whose output the broker refuses; the rest, with a minimal ``output_refused`` dead
    letter in its place, is then committed.

    Raises:
        TransactionFailed: nothing of ``part`` is committed (unless it says ``in_doubt``).
    """
    next_offset = next_offsets(part)[partition]
    outputs = outcome.only(part)
    try:
        producer.commit(next_offset, outputs.tag_events, outputs.dead_letters)
        return outputs
    except TransactionFailed as failed:
        if failed.producer_closed:
            raise
        on_aborted()
    publisher = isolating()
    try:
        published = publisher.publish(part, outputs)
    except TransactionFailed:
        raise
    except Exception as error:
        raise TransactionFailed(partition, f"isolating failed: {error!r}") from error
    producer.commit(next_offset, published.tag_events, published.dead_letters)
    publisher.succeeded()
    return published
