"""Finding the one record whose output the broker refuses, instead of retrying its batch forever.

A batch whose outputs keep failing to publish would be retried whole, forever, with the batch's
valid photos tagged again on every try. :func:`publish_isolating` publishes the batch's outputs
half by half instead, splitting every part that fails, until each failing record stands alone;
such a record's outputs get one more try, then a minimal dead letter (``output_refused``: no
headers, no value, a short message) takes their place. If even that is refused, the error goes
up and the loop backs off and retries the batch: nothing is ever dropped silently.

What counts as an outage rather than a poison record (:func:`looks_like_outage`): the broker not
answering in time, no broker to talk to, or an error Kafka itself calls retriable. The loop retries
those whole, with growing pauses, and isolates only after several failures in a row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from schemas.dead_letter import DeadLetter
from schemas.errors import ReasonCode
from schemas.kafka_record import KafkaRecord
from worker.adapters.kafka import first_offsets
from worker.adapters.kafka.output import looks_like_outage
from worker.error_kinds import error_kind
from worker.observability.metrics import WorkerMetrics
from worker.outcome import BatchOutcome
from worker.ports import Partition, Sink

log = structlog.get_logger("landmark.worker")


class IsolationTimeUp(Exception):
    """Isolating took longer than its budget, or nothing went through; the batch is retried."""


def publish_isolating(
    sink: Sink,
    records: Sequence[KafkaRecord],
    outcome: BatchOutcome,
    *,
    stand_in: Callable[[KafkaRecord, BaseException], DeadLetter],
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> BatchOutcome:
    """Publish the outputs of ``records`` part by part, isolating the records whose outputs fail.

    Args:
        sink: Where outputs go.
        records: The batch.
        outcome: Its outputs (:meth:`BatchOutcome.only` picks a part's).
        stand_in: The minimal dead letter for a record whose own outputs are refused.
        deadline: ``clock()`` time after which a failing part is not split further.
        clock: Monotonic seconds.

    Returns:
        The outputs published: ``outcome``'s, with stand-ins for the isolated records' outputs.

    A record refused alone with an error that looks like an outage is only given a stand-in
    once some other part went through (the broker is there, it is this record's output it
    refuses); when no part goes through, the broker is taken to be away.

    Raises:
        IsolationTimeUp: a part failed after ``deadline``, or no part went through (the last
            error is the cause).
        Exception: a stand-in dead letter was refused too (the sink's error).
    """
    middle = len(records) // 2  # the whole batch has just failed: start with its halves
    pending = [list(records[:middle]), list(records[middle:])] if middle else [list(records)]
    waiting: list[list[KafkaRecord]] = []  # alone, refused as in an outage, before any success
    retried: set[int] = set()
    refused: dict[int, DeadLetter] = {}
    went_through = False
    last_error: BaseException | None = None
    while pending or waiting:
        if not pending:
            if not went_through:  # nothing at all went through: the broker is away
                raise IsolationTimeUp("no part of the batch was acknowledged") from last_error
            pending, waiting = waiting, []
        part = pending.pop(0)
        try:
            outputs = outcome.only(part)
            sink.publish(outputs.tag_events, outputs.dead_letters)
            went_through = True
            continue
        except Exception as error:
            last_error = error
            if clock() > deadline:
                raise IsolationTimeUp(f"isolating took past its budget: {error!r}") from error
            if len(part) > 1:
                middle = len(part) // 2
                pending[:0] = [part[:middle], part[middle:]]
                continue
            record = part[0]
            if looks_like_outage(error) and not went_through:
                waiting.append(part)  # judged once another part shows the broker is there
                continue
            if id(record) not in retried:  # the broker may just be back: one more try alone
                retried.add(id(record))
                pending.insert(0, part)
                continue
            letter = stand_in(record, error)
        sink.publish((), (letter,))
        refused[id(record)] = letter
    return _with_stand_ins(records, outcome, refused)


def _with_stand_ins(
    records: Sequence[KafkaRecord], outcome: BatchOutcome, refused: dict[int, DeadLetter]
) -> BatchOutcome:
    kept = outcome.only([record for record in records if id(record) not in refused])
    return BatchOutcome(
        tag_events=kept.tag_events,
        dead_letters=kept.dead_letters + tuple(refused.values()),
        stage_timings=outcome.stage_timings,
        tag_event_sources=kept.tag_event_sources,
    )


class IsolatingPublisher:
    """Publishes a batch's outputs; isolates the record whose outputs keep being refused.

    Args:
        sink: Where outputs go.
        worker_id: Named in stand-in dead letters.
        isolate_after_failures: Failures in a row of one batch, outage-like or not, after which
            it is published part by part.
        budget_s: Longest time spent isolating, so that the consumer polls again in time.
        metrics: Counts what was isolated (``errors_total{kind="output_refused"}``).
        clock: Current UTC time, for the stand-ins.
        monotonic: Monotonic seconds, for the budget.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        worker_id: str,
        isolate_after_failures: int,
        budget_s: float,
        metrics: WorkerMetrics,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._worker_id = worker_id
        self._isolate_after = isolate_after_failures
        self._budget_s = budget_s
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._failing: tuple[frozenset[tuple[Partition, int]], int] | None = None

    def publish(self, records: Sequence[KafkaRecord], outcome: BatchOutcome) -> BatchOutcome:
        """Publish the outputs of ``records``; return what was published.

        A failed publish that looks like an outage is passed on (the loop retries the batch
        after a pause); one that does not, or the ``isolate_after_failures``-th failure of the
        same batch in a row, is followed at once by :func:`publish_isolating`.

        Raises:
            Exception: the batch must be retried after a pause (an outage, isolating took too
                long, or even a stand-in dead letter was refused).
        """
        try:
            self._sink.publish(outcome.tag_events, outcome.dead_letters)
            return outcome
        except Exception as error:
            failures = self._count_failure(records)
            if looks_like_outage(error) and failures < self._isolate_after:
                raise
            self._metrics.errors.labels(kind=error_kind(error)).inc()
            log.warning(
                "publishing part by part to isolate the record whose output is refused",
                error=repr(error),
                records=len(records),
                failures=failures,
            )
        try:
            published = publish_isolating(
                self._sink,
                records,
                outcome,
                stand_in=self._stand_in,
                deadline=self._monotonic() + self._budget_s,
                clock=self._monotonic,
            )
        except Exception as error:
            log.error(
                "cannot publish the batch even with its refused outputs replaced by minimal "
                "dead letters; it will be retried after a pause",
                error=repr(error),
                records=len(records),
            )
            raise
        refused = [d for d in published.dead_letters if d.reason is ReasonCode.OUTPUT_REFUSED]
        self._metrics.errors.labels(kind="output_refused").inc(len(refused))
        return published

    def succeeded(self) -> None:
        """The batch was committed: the next failure starts a new count."""
        self._failing = None

    def _count_failure(self, records: Sequence[KafkaRecord]) -> int:
        """Failures in a row of this batch (the same first offsets), this one included."""
        key = frozenset(first_offsets(records).items())
        count = self._failing[1] + 1 if self._failing and self._failing[0] == key else 1
        self._failing = (key, count)
        return count

    def _stand_in(self, record: KafkaRecord, error: BaseException) -> DeadLetter:
        """The minimal dead letter for a record whose own outputs the broker refuses."""
        return DeadLetter.from_record(
            KafkaRecord(
                key=record.key,
                value=record.value,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            ),
            reason=ReasonCode.OUTPUT_REFUSED,
            message=f"the broker refused this record's output: {error!r}"[:500],
            worker_id=self._worker_id,
            now=self._clock(),
            max_inline_bytes=0,
        )
