"""The two ends of the worker's pipeline that run beside the loop: preparing and publishing.

:class:`PreparingStage` fetches and decodes the next batch in a thread of its own (spreading the
photos over the decoding pool); :class:`PublishingStage` searches the gallery for the batch the
loop has just embedded, votes, and publishes the outputs in a thread of its own and, back in the
loop's thread, commits the batch once the broker has acknowledged them. Each holds at most one
batch, so the loop never has more than three in flight.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import structlog

from schemas.kafka_record import KafkaRecord
from schemas.preprocessing import PreprocessingSpec
from worker.decode_stage import Decoded, Pacing, Rejected, prepare_batch
from worker.delivery import BatchRevoked, Delivered, Delivery
from worker.observability.health import HealthState
from worker.observability.metrics import WorkerMetrics
from worker.outcome import BatchOutcome
from worker.ports import BatchDecoder, PhotoFetcher

log = structlog.get_logger("landmark.worker")

Prepared = tuple[list[Decoded | Rejected], float]
#: A batch's outputs from its embeddings: search and vote, telling each stage as it enters it.
Answer = Callable[[Callable[[str], None]], BatchOutcome]


@dataclass
class InFlight:
    """One batch on its way through the pipeline.

    Attributes:
        records: The batch as polled.
        batch_id: Its id in the logs.
        spec: The preprocessing it is being decoded for.
        generation: The consumer's assignment generation when it was polled.
        prepared: Its photos and the seconds they took, from the preparing thread.
        outcome: Its outputs, once searched and voted (in the publishing thread).
        published: What was published of them, from the publishing thread.
        publish_s: Seconds its publish took.
    """

    records: list[KafkaRecord]
    batch_id: str
    spec: PreprocessingSpec
    prepared: Future[Prepared]
    generation: int
    outcome: BatchOutcome | None = None
    published: Future[Delivered] | None = None
    publish_s: float = 0.0


class PreparingStage:
    """Fetches and decodes one batch at a time beside the loop.

    Args:
        fetcher: Resolves photo references.
        pool: The decoding threads.
        fetch_budget_s: Longest wait for a batch's fetches.
        stop_requested: True once the worker is asked to stop (a batch still waiting on
            references is then given up).
        batch_decoder: Decodes the photos it takes in batches; None: all on the CPU.
    """

    def __init__(
        self,
        fetcher: PhotoFetcher,
        pool: Executor,
        fetch_budget_s: float,
        stop_requested: Callable[[], bool],
        batch_decoder: BatchDecoder | None,
    ) -> None:
        self._fetcher = fetcher
        self._pool = pool
        self._pacing = Pacing(fetch_budget_s=fetch_budget_s, stop_requested=stop_requested)
        self._batch_decoder = batch_decoder
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")

    def start(
        self, records: list[KafkaRecord], spec: PreprocessingSpec, generation: int
    ) -> InFlight:
        """Begin preparing ``records`` for ``spec``; the loop goes on meanwhile."""
        return InFlight(
            records=records,
            batch_id=uuid.uuid4().hex[:12],
            spec=spec,
            prepared=self._thread.submit(self.prepare, records, spec),
            generation=generation,
        )

    def prepare(self, records: list[KafkaRecord], spec: PreprocessingSpec) -> Prepared:
        """Fetch and decode ``records`` now, in the calling thread.

        Raises:
            BatchStopped: the worker was asked to stop while references were being fetched.
        """
        started = time.perf_counter()
        prepared = prepare_batch(
            records, self._fetcher, spec, self._pool, self._pacing, self._batch_decoder
        )
        return prepared, time.perf_counter() - started

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)


class PublishingStage:
    """Searches, votes and publishes one batch at a time beside the loop; commits it from the
    loop's thread.

    Args:
        delivery: Publishes a batch's outputs and commits its offsets.
        health: Told of the stages (the loop, waiting for this thread, is in the stage the
            thread is in: search, vote or publish).
        metrics: Counts batches dropped after a rebalance.
        worker_id: Bound in the publishing thread's logs.
    """

    def __init__(
        self,
        delivery: Delivery,
        health: HealthState,
        metrics: WorkerMetrics,
        worker_id: str,
    ) -> None:
        self._delivery = delivery
        self._health = health
        self._metrics = metrics
        self._worker_id = worker_id
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self._step = "search"
        self._followed = False  # the loop waits for this thread: it is in this thread's stage
        self._step_lock = threading.Lock()
        self.batch: InFlight | None = None

    def start(self, batch: InFlight, answer: Answer) -> None:
        """Begin searching, voting and publishing the embedded ``batch`` (the previous batch
        must be committed); ``answer`` computes its outputs in this stage's thread."""
        assert self.batch is None

        def enter(step: str) -> None:
            with self._step_lock:
                self._step = step
                if self._followed:
                    self._health.enter_stage(step)

        def publish() -> Delivered:
            with structlog.contextvars.bound_contextvars(
                worker_id=self._worker_id, batch_id=batch.batch_id
            ):
                outcome = batch.outcome = answer(enter)
                enter("publish")
                started = time.perf_counter()
                try:
                    return self._delivery.publish(batch.records, outcome, batch.generation)
                finally:
                    batch.publish_s = time.perf_counter() - started

        self._step = "search"
        batch.published = self._thread.submit(publish)
        self.batch = batch

    def settle(self) -> None:
        """Wait until the batch in this stage is published (or failed), without committing it:
        the gallery it is searched in may then be switched or closed."""
        if self.batch is not None and self.batch.published is not None:
            self._follow(self.batch.published)

    def commit(self) -> bool:
        """Wait until the batch being published is delivered, then commit it.

        Returns:
            True when a batch was committed; False when there was none, or it was given up
            after a rebalance (the commit refused, or the batch polled before the partitions
            were revoked; counted: the partitions' new owner re-reads it).

        Raises:
            Exception: the publish failed; the batch stays here for :meth:`abandon`.
        """
        batch = self.batch
        if batch is None or batch.published is None:
            return False
        self._follow(batch.published)
        try:
            delivered = batch.published.result()
        except BatchRevoked as revoked:
            self.batch = None
            self._metrics.errors.labels(kind="batch_revoked").inc()
            log.info(
                "batch dropped after a rebalance", batch_id=batch.batch_id, reason=str(revoked)
            )
            return False
        self.batch = None
        with structlog.contextvars.bound_contextvars(batch_id=batch.batch_id):
            self._health.enter_stage("commit")
            return self._delivery.commit(batch.records, delivered, batch.publish_s)

    def _follow(self, published: Future[Delivered]) -> None:
        """Wait for ``published``, in the stage the publishing thread is in."""
        with self._step_lock:
            self._followed = True
            self._health.enter_stage(self._step)
        try:
            wait([published])
        finally:
            with self._step_lock:
                self._followed = False

    def abandon(self) -> InFlight | None:
        """Give the batch up after a failure (its publish let end first); returns it to rewind."""
        batch, self.batch = self.batch, None
        if batch is not None and batch.published is not None:
            try:
                batch.published.result()
            except Exception as error:
                log.debug("publish in flight failed", error=repr(error))
        return batch

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
