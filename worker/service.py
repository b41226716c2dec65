"""The worker loop: poll a batch, run the pure core, publish, commit; between batches, switch.

At-least-once: offsets are committed only after the broker acknowledged every tag event and dead
letter of the batch. When Kafka or Milvus fails, the batch is not committed: the consumer seeks
back to the batch's first offsets and retries it after a growing pause; a batch whose outputs keep
being refused is published part by part until the record at fault is isolated
(:mod:`worker.isolation`). A commit the group refuses
after a rebalance is not retried (the partitions' new owner re-reads the batch). Between batches,
:class:`worker.model_switch.ModelSwitch` picks up a new gallery or model. SIGTERM/SIGINT ask the
loop to stop; it finishes the batch in flight (publish and commit) unless the batch is still being
fetched (then it is given up, uncommitted, at once: its next reader tags it), then closes the
producer, the consumer (leaving the group) and the gallery. Fetching a batch never takes more
than a quarter of the consumer's poll interval (:mod:`worker.decode_stage`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog
from kafka.errors import CommitFailedError, KafkaError

from schemas.kafka_record import KafkaRecord
from worker.core import BatchOutcome, process_batch
from worker.decode_stage import BatchStopped, Pacing
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

    def stop(self) -> None:
        """Ask the loop to finish the batch in flight and return (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Process batches until stopped, each committed once its outputs are acknowledged.

        Once stopped, and the batch in flight finished, close the producer, the consumer (leaving
        the group; every batch was committed as it finished) and the gallery.
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
                if records:
                    self._handle_batch(records)
        finally:
            self._shutdown()

    def _handle_batch(self, records: list[KafkaRecord]) -> None:
        batch_id = uuid.uuid4().hex[:12]
        with structlog.contextvars.bound_contextvars(batch_id=batch_id):
            try:
                outcome = self._process(records)
                self._health.enter_stage("publish")
                started = time.perf_counter()
                published = self._publishing.publish(records, outcome)
                publish_s = time.perf_counter() - started
                self._health.enter_stage("commit")
                commit_s = self._timed(lambda: self._source.commit(records))
                self._health.succeeded("kafka", "commit")
            except BatchStopped:
                log.info("stopping: the batch being fetched is given up, not committed")
                return
            except CommitFailedError as error:
                # The group moved our partitions on; their new owner re-reads the uncommitted
                # tail (already published: at-least-once, consumers deduplicate by image id).
                self._metrics.errors.labels(kind="commit_failed").inc()
                log.warning(
                    "commit refused after a rebalance", error=str(error), records=len(records)
                )
                return
            except Exception as error:
                self._retry_later(records, error)
                return
            self._backoff_s = 0.0
            self._publishing.succeeded()
            self._health.unblock()
            report_committed_batch(self._metrics, len(records), published, publish_s, commit_s)

    def _process(self, records: list[KafkaRecord]) -> BatchOutcome:
        served = self._served
        return process_batch(
            records,
            embedder=served.model,
            index=ObservedIndex(served.gallery, self._health),
            fetcher=self._fetcher,
            spec=served.model.manifest.preprocessing,
            vote=served.vote,
            worker_id=self._settings.worker_id,
            clock=self._clock,
            decode_pool=self._pool,
            dead_letter_max_inline_bytes=self._settings.dead_letter_max_inline_bytes,
            pacing=Pacing(
                fetch_budget_s=self._settings.max_poll_interval_s / 4,
                stop_requested=self._stop.is_set,
                on_stage=self._health.enter_stage,
            ),
        )

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
        self._pool.shutdown(wait=True, cancel_futures=True)
        log.info("worker stopped")
