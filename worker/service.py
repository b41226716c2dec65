"""The worker loop: a pipeline of three batches; poll, decode, embed, search, vote, publish, commit.

While batch n is embedded, searched and voted in the loop's thread, batch n+1 is fetched and
decoded (a thread of its own, which spreads the photos over the decoding pool), and the outputs
of batch n-1 are being published (a thread of its own, waiting for the broker's
acknowledgements). Everything that touches the consumer (polls, commits, seeks, lag) stays in the
loop's thread. At most three batches are in flight, so memory stays flat under any backlog.

At-least-once: offsets are committed only after the broker acknowledged every tag event and dead
letter of the batch, one batch after the other, in the order they were polled. When Kafka or
Milvus fails, nothing in flight is committed: the consumer seeks back to the first offsets of
every uncommitted batch and retries them after a growing pause; a batch whose outputs keep being
refused is published part by part until the record at fault is isolated
(:mod:`worker.isolation`). A commit the group refuses after a rebalance is not retried (the
partitions' new owner re-reads the batch). Between batches, :class:`worker.model_switch.ModelSwitch`
picks up a new gallery or model; a batch decoded for another input size is decoded again.
SIGTERM/SIGINT ask the loop to stop; it finishes, publishes and commits the batches already
decoded, gives up one still being fetched (uncommitted, at once: its next reader tags it), then
closes the producer, the consumer (leaving the group) and the gallery. Fetching a batch never
takes more than a quarter of the consumer's poll interval (:mod:`worker.decode_stage`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from kafka.errors import CommitFailedError, KafkaError

from schemas.kafka_record import KafkaRecord
from schemas.preprocessing import PreprocessingSpec
from worker.core import BatchOutcome, finish_batch
from worker.decode_stage import BatchStopped, Decoded, Pacing, Rejected, prepare_batch
from worker.error_kinds import error_kind
from worker.isolation import IsolatingPublisher
from worker.model_switch import ModelSwitch, VoteOverrides
from worker.observability.batch_report import report_committed_batch
from worker.observability.health import HealthState
from worker.observability.metrics import WorkerMetrics
from worker.observability.progress import BrokerWatch, ObservedIndex
from worker.ports import Gallery, PhotoFetcher, ServedModel, Sink, Source

log = structlog.get_logger("landmark.worker")


@dataclass(frozen=True)
class LoopSettings:
    """The parts of :class:`worker.settings.WorkerSettings` the loop itself uses."""

    worker_id: str
    model_dir: Path
    batch_max_records: int = 32
    batch_max_wait_ms: int = 200
    decode_threads: int = 2
    vote_k: int | None = None
    vote_weighting: str | None = None
    vote_threshold: float | None = None
    vote_rule: str | None = None
    dead_letter_max_inline_bytes: int = 512 * 1024
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    reload_check_interval_s: float = 5.0
    lag_interval_s: float = 5.0
    isolate_after_failures: int = 3
    max_poll_interval_s: float = 300.0


@dataclass
class _InFlight:
    """One batch on its way through the pipeline.

    Attributes:
        records: The batch as polled.
        batch_id: Its id in the logs.
        spec: The preprocessing it is being decoded for.
        prepared: Its photos, fetched and decoded in the preparing thread.
        outcome: Its outputs, once embedded, searched and voted.
        published: What was published of them, once the publishing thread is done.
        publish_s: Seconds its publish took, in the publishing thread.
    """

    records: list[KafkaRecord]
    batch_id: str
    spec: PreprocessingSpec
    prepared: Future[tuple[list[Decoded | Rejected], float]]
    outcome: BatchOutcome | None = None
    published: Future[BatchOutcome] | None = None
    publish_s: float = 0.0


class WorkerService:
    """Runs the loop until :meth:`stop` is called.

    Args:
        settings: Loop settings.
        model: The served model, already loaded.
        gallery: The reference index, already checked against ``model``.
        source: The image consumer.
        sink: The output publisher.
        fetcher: Resolves photo references.
        metrics: Prometheus metrics.
        health: Liveness/readiness flags.
        load_model: Loads an export directory (for switching to a new model).
        open_gallery: Opens the gallery behind the alias afresh (for switching with a new model).
        clock: Current UTC time.
    """

    def __init__(
        self,
        settings: LoopSettings,
        *,
        model: ServedModel,
        gallery: Gallery,
        source: Source,
        sink: Sink,
        fetcher: PhotoFetcher,
        metrics: WorkerMetrics,
        health: HealthState,
        load_model: Callable[[Path], ServedModel],
        open_gallery: Callable[[], Gallery],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._source = source
        self._sink = sink
        self._fetcher = fetcher
        self._metrics = metrics
        self._health = health
        self._clock = clock
        self._stop = threading.Event()
        self._backoff_s = 0.0
        self._next_lag = 0.0
        self._broker = BrokerWatch(source, health, metrics)
        self._publishing = IsolatingPublisher(
            sink,
            worker_id=settings.worker_id,
            isolate_after_failures=settings.isolate_after_failures,
            budget_s=settings.max_poll_interval_s / 4,
            metrics=metrics,
            clock=clock,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=settings.decode_threads, thread_name_prefix="decode"
        )
        # One batch is prepared and one published at a time: a thread each.
        self._preparing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        self._publishing_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self._ahead: _InFlight | None = None  # just polled, being decoded
        self._finishing: _InFlight | None = None  # decoded or being decoded; finished next
        self._publishing_batch: _InFlight | None = None  # published, committed next
        self._served = ModelSwitch(
            model=model,
            gallery=gallery,
            model_dir=settings.model_dir,
            check_interval_s=settings.reload_check_interval_s,
            vote_overrides=VoteOverrides(
                settings.vote_k,
                settings.vote_weighting,
                settings.vote_threshold,
                settings.vote_rule,
            ),
            metrics=metrics,
            worker_id=settings.worker_id,
            load_model=load_model,
            open_gallery=open_gallery,
        )

    @property
    def model_version(self) -> str:
        """The version of the model in use."""
        return self._served.model.model_version

    @property
    def gallery_version(self) -> str:
        """The version of the gallery in use."""
        return self._served.gallery.gallery_version

    @property
    def idle(self) -> bool:
        """True when no batch is in flight (all polled batches are committed or given back)."""
        return self._ahead is None and self._finishing is None and self._publishing_batch is None

    def stop(self) -> None:
        """Ask the loop to finish the batch in flight and return (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Process batches until stopped, each committed once its outputs are acknowledged.

        Once stopped, the batches already decoded are finished, published and committed, one
        still being fetched is given up; then the producer, the consumer (leaving the group) and
        the gallery are closed.
        """
        structlog.contextvars.bind_contextvars(worker_id=self._settings.worker_id)
        log.info(
            "worker started", model_version=self.model_version, gallery_version=self.gallery_version
        )
        self._health.set_loaded(model=True, gallery=True)
        self._health.unblock()
        try:
            while not self._stop.is_set():
                self._health.beat()
                self._health.enter_stage("switch")
                self._served.maybe_switch()
                self._maybe_update_lag()
                self._broker.check()
                self._health.enter_stage("poll")
                records = self._source.poll_batch(
                    self._settings.batch_max_records, self._settings.batch_max_wait_ms
                )
                self._ahead = self._start_preparing(records) if records else None
                self._advance()
                self._finishing, self._ahead = self._ahead, None
            self._drain()
        finally:
            self._shutdown()

    def _start_preparing(self, records: list[KafkaRecord]) -> _InFlight:
        """Fetch and decode ``records`` in the preparing thread (the loop goes on)."""
        spec = self._served.model.manifest.preprocessing
        return _InFlight(
            records=records,
            batch_id=uuid.uuid4().hex[:12],
            spec=spec,
            prepared=self._preparing.submit(self._prepare, records, spec),
        )

    def _prepare(
        self, records: list[KafkaRecord], spec: PreprocessingSpec
    ) -> tuple[list[Decoded | Rejected], float]:
        started = time.perf_counter()
        pacing = Pacing(
            fetch_budget_s=self._settings.max_poll_interval_s / 4,
            stop_requested=self._stop.is_set,
        )
        prepared = prepare_batch(records, self._fetcher, spec, self._pool, pacing)
        return prepared, time.perf_counter() - started

    def _advance(self) -> None:
        """One step of the pipeline: finish the decoded batch, commit the published one, and
        start publishing the batch just finished. On a failure, every batch in flight is
        rewound and retried after a pause."""
        batch = self._finishing
        try:
            if batch is not None:
                self._finish(batch)
            self._commit_published()
            if batch is not None:
                self._start_publishing(batch)
        except BatchStopped:
            log.info(
                "stopping: the batch being fetched is given up, not committed",
                batch_id=batch.batch_id if batch is not None else None,
            )
            self._finishing = None
        except Exception as error:
            self._retry_in_flight(error, extra=[batch] if batch is not None else [])

    def _finish(self, batch: _InFlight) -> None:
        """Embed, search and vote ``batch`` (waiting for its decoding first)."""
        self._health.enter_stage("decode")
        prepared, decode_s = batch.prepared.result()
        served = self._served
        spec = served.model.manifest.preprocessing
        if spec != batch.spec:  # a new model with another input size since it was decoded
            prepared, decode_s = self._prepare(batch.records, spec)
        with structlog.contextvars.bound_contextvars(batch_id=batch.batch_id):
            batch.outcome = finish_batch(
                prepared,
                embedder=served.model,
                index=ObservedIndex(served.gallery, self._health),
                vote=served.vote,
                worker_id=self._settings.worker_id,
                clock=self._clock,
                decode_s=decode_s,
                dead_letter_max_inline_bytes=self._settings.dead_letter_max_inline_bytes,
                on_stage=self._health.enter_stage,
            )

    def _start_publishing(self, batch: _InFlight) -> None:
        outcome = batch.outcome
        assert outcome is not None

        def publish() -> BatchOutcome:
            started = time.perf_counter()
            with structlog.contextvars.bound_contextvars(
                worker_id=self._settings.worker_id, batch_id=batch.batch_id
            ):
                published = self._publishing.publish(batch.records, outcome)
            batch.publish_s = time.perf_counter() - started
            return published

        batch.published = self._publishing_thread.submit(publish)
        self._publishing_batch = batch

    def _commit_published(self) -> None:
        """Wait until the batch being published is acknowledged, then commit it.

        Raises:
            Exception: the publish failed (the caller rewinds everything in flight).
        """
        batch = self._publishing_batch
        if batch is None or batch.published is None:
            return
        self._health.enter_stage("publish")
        published = batch.published.result()
        self._publishing_batch = None
        with structlog.contextvars.bound_contextvars(batch_id=batch.batch_id):
            self._health.enter_stage("commit")
            try:
                commit_s = self._timed(lambda: self._source.commit(batch.records))
            except CommitFailedError as error:
                # The group moved our partitions on; their new owner re-reads the uncommitted
                # tail (already published: at-least-once, consumers deduplicate by image id).
                self._metrics.errors.labels(kind="commit_failed").inc()
                log.warning(
                    "commit refused after a rebalance",
                    error=str(error),
                    records=len(batch.records),
                )
                return
            self._health.succeeded("kafka", "commit")
        self._backoff_s = 0.0
        self._publishing.succeeded()
        self._health.unblock()
        report_committed_batch(
            self._metrics, len(batch.records), published, batch.publish_s, commit_s
        )

    def _drain(self) -> None:
        """Stopping: finish, publish and commit what is decoded; give up what is not."""
        while self._finishing is not None or self._publishing_batch is not None:
            self._advance()
            self._finishing = None

    def _retry_in_flight(self, error: Exception, extra: list[_InFlight]) -> None:
        """Rewind every uncommitted batch (the one being published, the one being finished, the
        one just polled) and pause: nothing polled after a failed batch may be committed before
        it is retried, or a crash could lose it."""
        publishing, ahead = self._publishing_batch, self._ahead
        self._publishing_batch, self._ahead = None, None
        if publishing is not None and publishing.published is not None:
            try:  # let the publish in flight end before seeking back; its result is moot
                publishing.published.result()
            except Exception as publish_error:
                log.debug("publish in flight failed too", error=repr(publish_error))
        in_flight = [b for b in (publishing, *extra, ahead) if b is not None]
        self._retry_later([r for b in in_flight for r in b.records], error)

    def _retry_later(self, records: list[KafkaRecord], error: Exception) -> None:
        kind = error_kind(error)
        self._metrics.errors.labels(kind=kind).inc()
        self._backoff_s = min(
            self._settings.backoff_max_s, max(self._settings.backoff_initial_s, self._backoff_s * 2)
        )
        log.warning(
            "batch not committed; retrying after a pause",
            kind=kind,
            error=repr(error),
            records=len(records),
            pause_s=self._backoff_s,
        )
        self._health.block(f"backing off after {kind}")
        self._health.enter_stage("backoff")
        try:
            self._source.rewind(records)
        except KafkaError as seek_error:
            log.warning("seek back failed", error=repr(seek_error))
        self._stop.wait(self._backoff_s)

    def _maybe_update_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + self._settings.lag_interval_s
        try:
            self._metrics.set_lag(self._source.lag())
        except KafkaError as error:
            self._metrics.errors.labels(kind="lag_unavailable").inc()
            log.debug("lag unavailable", error=repr(error))

    @staticmethod
    def _timed(action: Callable[[], None]) -> float:
        started = time.perf_counter()
        action()
        return time.perf_counter() - started

    def _shutdown(self) -> None:
        self._health.block("shutting down")
        log.info("worker stopping: leaving the group")
        for what, action in (
            ("producer", self._sink.close),
            ("consumer", self._source.close),
            ("gallery", self._served.close),
        ):
            try:
                action()
            except Exception as error:
                log.warning("close failed", what=what, error=repr(error))
        # Fetches still running were cut short (decode_stage); queued ones never start.
        self._preparing.shutdown(wait=True, cancel_futures=True)
        self._publishing_thread.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)
        log.info("worker stopped")
