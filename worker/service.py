"""The worker loop: a pipeline of three batches; poll, decode, embed, search, vote, publish, commit.

While batch n is embedded in the loop's thread, batch n+1 is fetched and decoded and batch n-1
searched, voted and published, beside it (:mod:`worker.pipeline_stages`). Consumer calls
(polls, commits, seeks, lag) stay in the loop's thread; commits follow the poll order, each after
the broker acknowledged every output of its batch (at-least-once), or in the same transaction
(exactly-once; :mod:`worker.delivery`). When Kafka or Milvus fails, every batch in flight is
rewound and retried after a growing pause; outputs that keep being refused are isolated
(:mod:`worker.isolation`); a batch given up by a rebalance is not retried. Between batches, :class:`worker.model_switch.ModelSwitch` picks up a new gallery or model (a batch
decoded for another input size is decoded again). On SIGTERM/SIGINT the decoded batches are
finished and committed, one still waiting on reference fetches is given up, and the producer, the
consumer (leaving the group) and the gallery are closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import structlog
from kafka.errors import KafkaError

from schemas.kafka_record import KafkaRecord
from worker.decode_stage import BatchStopped
from worker.delivery import Delivery
from worker.delivery.at_least_once import AtLeastOnce
from worker.embed_stage import embed_prepared
from worker.error_kinds import error_kind
from worker.model_switch import ModelSwitch, VoteOverrides
from worker.observability.health import HealthState
from worker.observability.metrics import WorkerMetrics
from worker.observability.progress import BrokerWatch, ObservedIndex
from worker.outcome import Answers
from worker.pipeline_stages import Answer, InFlight, PreparingStage, PublishingStage
from worker.ports import BatchDecoder, Gallery, PhotoFetcher, ServedModel, Sink, Source
from worker.search_stage import search_and_vote
from worker.settings import LoopSettings

log = structlog.get_logger("landmark.worker")


class WorkerService:
    """Runs the loop until :meth:`stop` is called.

    Args:
        settings: Loop settings.
        model: The served model, already loaded.
        gallery: The reference index, already checked against ``model``.
        source: The image consumer.
        sink: The output publisher (at-least-once; unused when ``delivery`` is given).
        fetcher: Resolves photo references.
        metrics: Prometheus metrics.
        health: Liveness/readiness flags.
        load_model: Loads an export directory (for switching to a new model).
        open_gallery: Opens the gallery behind the alias afresh (for switching with a new model).
        clock: Current UTC time.
        batch_decoder: Decodes the photos it takes in batches (on a GPU); None: all on the CPU.
        delivery: How outputs are delivered and offsets committed; None: at-least-once
            through ``sink`` and ``source``.
    """

    def __init__(
        self,
        settings: LoopSettings,
        *,
        model: ServedModel,
        gallery: Gallery,
        source: Source,
        sink: Sink | None,
        fetcher: PhotoFetcher,
        metrics: WorkerMetrics,
        health: HealthState,
        load_model: Callable[[Path], ServedModel],
        open_gallery: Callable[[], Gallery],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_decoder: BatchDecoder | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        self._settings = settings
        self._source = source
        self._metrics = metrics
        self._health = health
        self._clock = clock
        self._stop = threading.Event()
        self._backoff_s = 0.0
        self._next_lag = 0.0
        self._broker = BrokerWatch(source, health, metrics)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.decode_threads, thread_name_prefix="decode"
        )
        self._preparing = PreparingStage(
            fetcher,
            self._pool,
            fetch_budget_s=settings.max_poll_interval_s / 4,
            stop_requested=self._stop.is_set,
            batch_decoder=batch_decoder,
        )
        if delivery is None:
            assert sink is not None, "at-least-once delivery needs a sink"
            delivery = AtLeastOnce.isolating(
                source,
                sink,
                worker_id=settings.worker_id,
                isolate_after_failures=settings.isolate_after_failures,
                budget_s=settings.max_poll_interval_s / 4,
                health=health,
                metrics=metrics,
                clock=clock,
            )
        self._delivery = delivery
        self._publishing = PublishingStage(delivery, health, metrics, settings.worker_id)
        self._ahead: InFlight | None = None  # just polled, being decoded
        self._finishing: InFlight | None = None  # decoded or being decoded; finished next
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
        return self._ahead is None and self._finishing is None and self._publishing.batch is None

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
                if self._served.due:  # no search may run in a gallery being switched
                    self._publishing.settle()
                self._served.maybe_switch()
                self._maybe_update_lag()
                self._broker.check()
                self._delivery.prepare()
                if self._stop.is_set():  # asked meanwhile (a settle or a switch may take a while)
                    break
                self._health.enter_stage("poll")
                records = self._source.poll_batch(
                    self._settings.batch_max_records, self._settings.batch_max_wait_ms
                )
                spec = self._served.model.manifest.preprocessing
                generation = self._delivery.generation()
                self._ahead = self._preparing.start(records, spec, generation) if records else None
                self._advance()
                self._finishing, self._ahead = self._ahead, None
            self._drain()
        finally:
            self._shutdown()

    def _advance(self) -> None:
        """One step of the pipeline: finish the decoded batch, commit the published one, and
        start publishing the batch just finished. On a failure, every batch in flight is
        rewound and retried after a pause."""
        batch = self._finishing
        if batch is not None and not self._delivery.is_current(batch.generation):
            self._metrics.errors.labels(kind="batch_revoked").inc()
            log.info("batch dropped after a rebalance", batch_id=batch.batch_id)
            batch = None
        try:
            answer = self._embed(batch) if batch is not None else None
            if self._publishing.commit():
                self._backoff_s = 0.0
                self._health.unblock()
            if batch is not None and answer is not None:
                self._publishing.start(batch, answer)
        except BatchStopped:
            log.info(
                "stopping: the batch being fetched is given up, not committed",
                batch_id=batch.batch_id if batch is not None else None,
            )
        except Exception as error:
            self._retry_in_flight(error, batch)

    def _embed(self, batch: InFlight) -> Answer:
        """Embed ``batch`` (waiting for its decoding first); returns how to search and vote it,
        which the publishing thread does while the loop goes on with the next batch."""
        self._health.enter_stage("decode")
        prepared, decode_s = batch.prepared.result()
        served = self._served
        spec = served.model.manifest.preprocessing
        if spec != batch.spec:  # a new model with another input size since it was decoded
            prepared, decode_s = self._preparing.prepare(batch.records, spec)
        settings = self._settings
        answers = Answers(settings.worker_id, self._clock, settings.dead_letter_max_inline_bytes)
        self._health.enter_stage("embed")
        embedded = embed_prepared(
            prepared, embedder=served.model, answers=answers, decode_s=decode_s
        )
        index, vote = ObservedIndex(served.gallery, self._health), served.vote
        return lambda on_stage: search_and_vote(
            embedded, index=index, vote=vote, answers=answers, on_stage=on_stage
        )

    def _drain(self) -> None:
        """Stopping: finish, publish and commit what is decoded; give up what is not."""
        while self._finishing is not None or self._publishing.batch is not None:
            self._advance()
            self._finishing = None

    def _retry_in_flight(self, error: Exception, finishing: InFlight | None) -> None:
        """Rewind every uncommitted batch (the one being published, the one being finished, the
        one just polled) and pause: nothing polled after a failed batch may be committed before
        it is retried, or a crash could lose it."""
        publishing, ahead = self._publishing.abandon(), self._ahead
        self._ahead = None
        in_flight = [b for b in (publishing, finishing, ahead) if b is not None]
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
            self._delivery.rewind(records)
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

    def _shutdown(self) -> None:
        self._health.block("shutting down")
        log.info("worker stopping: leaving the group")
        # A publish still in flight (the loop ended on an error) ends before its producer closes.
        self._publishing.shutdown()
        for what, action in (
            ("producer", self._delivery.close),
            ("consumer", self._source.close),
            ("gallery", self._served.close),
        ):
            try:
                action()
            except Exception as error:
                log.warning("close failed", what=what, error=repr(error))
        # Fetches still running were cut short (decode_stage); queued ones never start.
        self._preparing.shutdown()
        self._pool.shutdown(wait=True, cancel_futures=True)
        log.info("worker stopped")
