"""Exactly-once delivery: each input partition's outputs and offset in one Kafka transaction.

For every input partition in a batch, the partition's own transactional producer
(:class:`~worker.ports.PartitionTransactions`) publishes the tag events and dead letters that
answer the partition's records, adds the group's next offset for the partition, and commits:
a ``read_committed`` reader sees the outputs exactly when the offset moved past their records.

How it holds across failures and rebalances:

* A partition is read only once it is *ready*: on assignment it is paused; :meth:`prepare`
  creates its producer (which fences every earlier producer of the id and ends the transaction
  one left open), then reads the committed offset, seeks there and resumes.
* Before partitions are revoked, the publish in flight ends (it holds the lock the revocation
  takes) and the producers are closed; batches polled before are dropped, not published.
* After a failed transaction the batches in flight are dropped and every partition they touched
  is made ready again: re-read from its committed offset, never from the batch's.
* A fenced producer means another worker holds the id: the partition stays paused and the
  worker rejoins the group. A record whose outputs the broker refuses is found with aborted
  trial transactions and gets an ``output_refused`` dead letter in the committed one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import structlog

from schemas.kafka_record import KafkaRecord
from worker.delivery import BatchRevoked, Delivered
from worker.delivery.parts import Isolators, commit_part, joined
from worker.observability.batch_report import report_committed_batch
from worker.observability.health import HealthState
from worker.observability.metrics import WorkerMetrics
from worker.outcome import BatchOutcome
from worker.ports import Partition, PartitionTransactions, RebalancingSource, TransactionFailed

log = structlog.get_logger("landmark.worker")

#: Transactions of one batch's partitions run at the same time (each partition has its own
#: producer), at most this many at once.
PARALLEL_TRANSACTIONS = 8


class ExactlyOnce:
    """Publishes and commits each input partition's share of a batch in one transaction.

    Args:
        source: The consumer (paused, repositioned and told of rebalances by this delivery).
        open_producer: Creates and initialises a partition's transactional producer.
        health: Told of successful commits.
        metrics: Counts transactions and reports committed batches.
        worker_id: Named in stand-in dead letters.
        isolate_after_failures: As :class:`~worker.isolation.IsolatingPublisher`'s.
        isolation_budget_s: Longest time spent isolating a refused output.
        offset_timeout_s: Longest wait for a committed offset.
        retry_initial_s: First pause before making a partition ready again after a failure.
        retry_max_s: Longest such pause.
        clock: Current UTC time, for the stand-ins.
        monotonic: Monotonic seconds.
    """

    def __init__(
        self,
        source: RebalancingSource,
        open_producer: Callable[[Partition], PartitionTransactions],
        *,
        health: HealthState,
        metrics: WorkerMetrics,
        worker_id: str,
        isolate_after_failures: int,
        isolation_budget_s: float,
        offset_timeout_s: float,
        retry_initial_s: float,
        retry_max_s: float,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._open_producer = open_producer
        self._health = health
        self._metrics = metrics
        self._offset_timeout_s = offset_timeout_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._monotonic = monotonic
        # Held by a publish from start to end, and by whatever changes the producers.
        self._lock = threading.Lock()
        self._producers: dict[Partition, PartitionTransactions] = {}
        self._isolating = Isolators(
            worker_id=worker_id,
            isolate_after_failures=isolate_after_failures,
            budget_s=isolation_budget_s,
            metrics=metrics,
            clock=clock,
            monotonic=monotonic,
        )
        self._unready: set[Partition] = set()  # paused until prepare() makes them ready
        self._fenced: set[Partition] = set()  # paused until the next assignment
        self._retry_at = 0.0
        self._retry_s = 0.0
        self._transactions = ThreadPoolExecutor(
            max_workers=PARALLEL_TRANSACTIONS, thread_name_prefix="transaction"
        )
        source.set_rebalance_hooks(self._on_revoked, self._on_assigned)

    def generation(self) -> int:
        return self._source.generation

    def is_current(self, generation: int) -> bool:
        return generation == self._source.generation

    @property
    def unready(self) -> frozenset[Partition]:
        """Held partitions not read from yet (paused until ready)."""
        return frozenset(self._unready | self._fenced)

    # -- rebalances (in the loop's thread, inside a poll) ---------------------------------------

    def _on_revoked(self) -> None:
        with self._lock:  # a publish in flight ends first
            self._close_all()
            self._unready.clear()
            self._fenced.clear()

    def _on_assigned(self, partitions: frozenset[Partition]) -> None:
        self._source.pause(partitions)
        self._unready = set(partitions)
        self._retry_at, self._retry_s = 0.0, 0.0

    # -- the loop's thread ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Make the held partitions that are not ready, ready: producer, committed offset, seek.

        A partition whose producer or offset cannot be had stays paused and is tried again
        after a growing pause; the others go on.
        """
        held = self._source.assigned
        self._unready &= held
        self._fenced &= held
        if not self._unready or self._monotonic() < self._retry_at:
            return
        ready: list[Partition] = []
        failed = False
        with self._lock:
            for partition in sorted(self._unready):
                try:
                    self._make_ready(partition)
                except Exception as error:
                    failed = True
                    self._metrics.errors.labels(kind="partition_not_ready").inc()
                    self._health.failed("kafka", "partition_not_ready")
                    log.warning(
                        "partition not ready for transactions; trying again after a pause",
                        partition=f"{partition[0]}-{partition[1]}",
                        error=repr(error),
                    )
                    continue
                ready.append(partition)
        if failed:
            self._retry_s = min(self._retry_max_s, max(self._retry_initial_s, self._retry_s * 2))
            self._retry_at = self._monotonic() + self._retry_s
        if ready:
            self._health.succeeded("kafka")
            self._unready.difference_update(ready)
            self._source.resume(ready)
            log.info(
                "partitions ready for transactions",
                partitions=sorted(f"{t}-{p}" for t, p in ready),
            )
        if not self._unready:
            self._retry_s = 0.0

    def _make_ready(self, partition: Partition) -> None:
        producer = self._producers.get(partition)
        if producer is None or producer.closed:
            started = time.perf_counter()
            self._producers[partition] = producer = self._open_producer(partition)
            self._isolating.forget(partition)
            self._metrics.transaction_seconds.labels(step="init").observe(
                time.perf_counter() - started
            )
        offset = self._source.committed(partition, self._offset_timeout_s)
        self._source.seek_to(partition, offset)

    def rewind(self, records: Sequence[KafkaRecord]) -> None:
        """Pause the held partitions of ``records`` until :meth:`prepare` re-reads them from
        their committed offsets (some of the batch's partitions may have committed)."""
        touched = {(r.topic, r.partition) for r in records} & self._source.assigned
        again = touched - self._fenced
        if touched:
            self._source.pause(touched)
        self._unready |= again
        if self._fenced:
            log.warning(
                "fenced: another producer holds these partitions' transactional ids; rejoining "
                "the group",
                partitions=sorted(f"{t}-{p}" for t, p in self._fenced),
            )
            self._source.request_rejoin()

    def commit(
        self, records: Sequence[KafkaRecord], delivered: Delivered, publish_s: float
    ) -> bool:
        self._health.succeeded("kafka", "commit")
        report_committed_batch(
            self._metrics,
            len(records),
            delivered.outcome,
            max(0.0, publish_s - delivered.commit_s),
            delivered.commit_s,
        )
        return True

    def close(self) -> None:
        with self._lock:
            self._close_all()
        self._transactions.shutdown(wait=True)

    # -- the publishing thread -----------------------------------------------------------------

    def publish(
        self, records: Sequence[KafkaRecord], outcome: BatchOutcome, generation: int
    ) -> Delivered:
        """Each partition's part in its own transaction, the partitions' at the same time."""
        with self._lock:
            if not self.is_current(generation):
                raise BatchRevoked(f"{len(records)} records polled before a rebalance")
            parts: dict[Partition, list[KafkaRecord]] = {}
            for record in records:
                parts.setdefault((record.topic, record.partition), []).append(record)
            started = time.perf_counter()
            running = [
                (part, self._transactions.submit(self._commit_part, partition, part, outcome))
                for partition, part in parts.items()
            ]
            committed: list[tuple[list[KafkaRecord], BatchOutcome]] = []
            errors: list[Exception] = []
            for part, future in running:  # every one ends before the lock is let go
                try:
                    committed.append((part, future.result()))
                except Exception as error:
                    errors.append(error)
            commit_s = time.perf_counter() - started
            if errors:
                for failure in errors:
                    if isinstance(failure, TransactionFailed):
                        self._failed(failure)
                if committed:  # those partitions moved on: count what they published
                    done = [r for part, _ in committed for r in part]
                    report_committed_batch(
                        self._metrics, len(done), outcome.only(done), 0.0, commit_s
                    )
                raise errors[0]
        return Delivered(joined(outcome, [published for _, published in committed]), commit_s)

    def _commit_part(
        self, partition: Partition, part: list[KafkaRecord], outcome: BatchOutcome
    ) -> BatchOutcome:
        producer = self._producers.get(partition)
        if producer is None or producer.closed or partition in self._unready | self._fenced:
            raise TransactionFailed(partition, "the partition is not ready", producer_closed=True)
        started = time.perf_counter()
        published = commit_part(
            producer,
            partition,
            part,
            outcome,
            isolating=lambda: self._isolating.publisher(partition, producer),
            on_aborted=self._metrics.transactions.labels(result="aborted").inc,
        )
        self._metrics.transactions.labels(result="committed").inc()
        self._metrics.transaction_seconds.labels(step="commit").observe(
            time.perf_counter() - started
        )
        return published

    def _failed(self, failed: TransactionFailed) -> None:
        result = "fenced" if failed.fenced else "in_doubt" if failed.in_doubt else "aborted"
        self._metrics.transactions.labels(result=result).inc()
        if failed.fenced:
            self._fenced.add(failed.partition)
        log.warning(
            "transaction not committed",
            partition=f"{failed.partition[0]}-{failed.partition[1]}",
            result=result,
            error=str(failed),
        )

    def _close_all(self) -> None:
        for producer in self._producers.values():
            producer.close()
        self._producers.clear()
        self._isolating.clear()
