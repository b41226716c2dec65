"""At-least-once delivery: publish, wait for the acknowledgement, then commit the offsets."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog
from kafka.errors import CommitFailedError

from schemas.kafka_record import KafkaRecord
from worker.delivery import Delivered
from worker.isolation import IsolatingPublisher
from worker.observability.batch_report import report_committed_batch
from worker.observability.health import HealthState
from worker.observability.metrics import WorkerMetrics
from worker.outcome import BatchOutcome
from worker.ports import Sink, Source

log = structlog.get_logger("landmark.worker")


class AtLeastOnce:
    """Publishes with the sink (isolating refused outputs), commits with the consumer.

    A crash or a rebalance between the acknowledgement and the commit tags the batch again;
    tag events are keyed by image id so that readers can drop the repeats.

    Args:
        source: The consumer whose offsets are committed.
        sink: Where outputs go.
        publisher: Publishes through ``sink``, isolating a record whose outputs are refused.
        health: Told of successful commits.
        metrics: Counts refused commits and reports committed batches.
    """

    def __init__(
        self,
        source: Source,
        sink: Sink,
        publisher: IsolatingPublisher,
        health: HealthState,
        metrics: WorkerMetrics,
    ) -> None:
        self._source = source
        self._sink = sink
        self._publisher = publisher
        self._health = health
        self._metrics = metrics

    @classmethod
    def isolating(
        cls,
        source: Source,
        sink: Sink,
        *,
        worker_id: str,
        isolate_after_failures: int,
        budget_s: float,
        health: HealthState,
        metrics: WorkerMetrics,
        clock: Callable[[], datetime],
    ) -> AtLeastOnce:
        """Publishing through an :class:`~worker.isolation.IsolatingPublisher` of ``sink``."""
        publisher = IsolatingPublisher(
            sink,
            worker_id=worker_id,
            isolate_after_failures=isolate_after_failures,
            budget_s=budget_s,
            metrics=metrics,
            clock=clock,
        )
        return cls(source, sink, publisher, health, metrics)

    def generation(self) -> int:
        return self._source.generation

    def is_current(self, generation: int) -> bool:
        # A batch polled before its partitions were revoked is dropped before it is published:
        # the group has reset the positions, the partitions' holder reads it again (publishing
        # it would only tag it twice; its commit would be refused).
        return generation == self._source.generation

    def prepare(self) -> None:
        return None

    def publish(
        self, records: Sequence[KafkaRecord], outcome: BatchOutcome, generation: int
    ) -> Delivered:
        return Delivered(self._publisher.publish(records, outcome))

    def commit(
        self, records: Sequence[KafkaRecord], delivered: Delivered, publish_s: float
    ) -> bool:
        started = time.perf_counter()
        try:
            self._source.commit(records)
        except CommitFailedError as error:
            self._metrics.errors.labels(kind="commit_failed").inc()
            log.warning("commit refused after a rebalance", error=str(error), records=len(records))
            return False
        commit_s = time.perf_counter() - started
        self._health.succeeded("kafka", "commit")
        self._publisher.succeeded()
        report_committed_batch(self._metrics, len(records), delivered.outcome, publish_s, commit_s)
        return True

    def rewind(self, records: Sequence[KafkaRecord]) -> None:
        self._source.rewind(records)

    def close(self) -> None:
        self._sink.close()
