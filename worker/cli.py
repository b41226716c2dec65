"""``landmark-worker``: the streaming tagger (Kafka in, batched embedding, Milvus vote, Kafka out)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TypeVar

import structlog
from kafka.errors import KafkaError

from configuration import load_settings
from configuration.kafka import (
    KafkaUnreachable,
    check_connection,
    describe_connection_failure,
)
from configuration.redaction import redact_text
from worker.adapters.allocator import tune_allocator
from worker.adapters.gpu_decode import batch_decoder_for
from worker.adapters.kafka import ImageConsumer
from worker.adapters.keras_embedder import KerasEmbedder, ModelExportError
from worker.adapters.photo_fetcher import FetcherSettings, ReferenceFetcher
from worker.delivery.choice import delivery_for
from worker.observability.health import HealthState, ReadinessLimits
from worker.observability.logs import configure_logging
from worker.observability.metrics import WorkerMetrics
from worker.observability.status_server import StatusServer
from worker.ports import Gallery, Partition
from worker.service import WorkerService
from worker.settings import LoopSettings, WorkerSettings

EXIT_INCOMPATIBLE = 2
DESCRIPTION = (
    "Consume photos from Kafka, embed them in batches, vote over the nearest reference "
    "photos in Milvus, publish landmark-tag events (bad input to the dead-letter topic)."
)
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker until SIGTERM/SIGINT; returns the process exit status."""
    settings = load_settings(WorkerSettings, argv, prog="landmark-worker", description=DESCRIPTION)
    configure_logging(settings.log_format, settings.log_level)
    log = structlog.get_logger("landmark.worker").bind(worker_id=settings.worker_id)
    if settings.allocator == "tuned":
        log.info("allocator settings", outcome=tune_allocator())

    metrics = WorkerMetrics()
    health = HealthState(
        limits=ReadinessLimits(
            loop_within_s=settings.readiness_loop_max_s,
            stage_within_s=settings.readiness_stage_max_s,
        )
    )
    metrics.ready.set_function(lambda: 1.0 if health.readiness()[0] else 0.0)
    server = StatusServer(settings.http_host, settings.http_port, health, metrics.registry).start()
    log.info(
        "status endpoint listening",
        url=f"http://{settings.http_host}:{server.port}",
        paths=["/metrics", "/healthz", "/readyz"],
    )
    stop_requested = threading.Event()
    services: list[WorkerService] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        stop_requested.set()
        for service in services:
            service.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        services.append(_build_service(settings, metrics, health, log, stop_requested))
        if stop_requested.is_set():
            services[0].stop()
        services[0].run()
    except _StartupRefused as refusal:
        log.error("worker refuses to start", reason=str(refusal))
        print(f"landmark-worker: {redact_text(str(refusal))}", file=sys.stderr)
        return EXIT_INCOMPATIBLE
    except _StoppedDuringStart:
        log.info("stopped before the worker was ready")
    finally:
        server.stop()
    return 0


class _StartupRefused(Exception):
    """The worker cannot serve: model export unusable or gallery built for another model."""


class _StoppedDuringStart(Exception):
    """SIGTERM/SIGINT arrived while waiting for Kafka or Milvus at start-up."""


def _retrying(
    what: str,
    connect: Callable[[], T],
    retry_on: tuple[type[BaseException], ...],
    settings: WorkerSettings,
    health: HealthState,
    stop: threading.Event,
    log: structlog.typing.FilteringBoundLogger,
) -> T:
    """Call ``connect`` until it succeeds, pausing longer after each failure (until stopped)."""
    pause = settings.backoff_initial_s
    while True:
        try:
            return connect()
        except retry_on as error:
            health.block(f"{what} unreachable")
            log.warning(
                "cannot connect at start-up; retrying",
                what=what,
                error=describe_connection_failure(error) if what == "kafka" else str(error),
                pause_s=pause,
            )
        if stop.wait(pause):
            raise _StoppedDuringStart
        pause = min(settings.backoff_max_s, pause * 2)


def _load_warm(directory: Path, batch_max_records: int) -> KerasEmbedder:
    """Load an export and compile it for the usual batch length before it serves."""
    model = KerasEmbedder.from_export(directory)
    model.warm_up((batch_max_records,))
    return model


def _open_gallery(settings: WorkerSettings, metrics: WorkerMetrics, health: HealthState) -> Gallery:
    from worker.adapters.milvus import MilvusReferenceIndex
    from worker.adapters.milvus.errors import is_timeout

    def failed(what: str, error: BaseException) -> None:
        # Every failed call, retried or not: a stall the retries outlast still shows.
        kind = "gallery_timeout" if is_timeout(error) else "gallery_call_failed"
        metrics.errors.labels(kind=kind).inc()
        health.failed("milvus", f"{what}: {kind}")

    index: Gallery = MilvusReferenceIndex(
        uri=settings.milvus_uri,
        token=settings.milvus_token.get_secret_value(),
        alias=settings.gallery_alias,
        timeout_s=settings.milvus_timeout_s,
        on_failure=failed,
    )
    return index


def _build_service(
    settings: WorkerSettings,
    metrics: WorkerMetrics,
    health: HealthState,
    log: structlog.typing.FilteringBoundLogger,
    stop: threading.Event,
) -> WorkerService:
    from worker.adapters.milvus import GalleryMismatchError, GalleryUnavailableError

    try:
        batch_decoder = batch_decoder_for(settings.decoder)
    except RuntimeError as error:
        raise _StartupRefused(str(error)) from error
    try:
        model = _load_warm(settings.model_dir, settings.batch_max_records)
    except (ModelExportError, OSError, ValueError) as error:
        raise _StartupRefused(
            f"cannot load the model export {settings.model_dir}: {error}"
        ) from error
    log.info(
        "model loaded",
        model_version=model.model_version,
        embedding_dim=model.embedding_dim,
        backbone=model.manifest.backbone,
    )
    try:
        gallery = _retrying(
            "milvus",
            lambda: _open_gallery(settings, metrics, health),
            (GalleryUnavailableError,),
            settings,
            health,
            stop,
            log,
        )
        gallery.check_compatible(model.model_version, model.embedding_dim)
    except GalleryMismatchError as error:
        raise _StartupRefused(
            f"the gallery behind alias {settings.gallery_alias!r} at {settings.milvus_uri} does "
            f"not match model {model.model_version} (dimension {model.embedding_dim}): {error}. "
            "Load a gallery for this model (landmark-load-gallery) or serve the model it was "
            "built with."
        ) from error
    health.set_loaded(model=True, gallery=True)
    log.info(
        "gallery opened",
        gallery_version=gallery.gallery_version,
        gallery_model_version=gallery.model_version,
    )

    def on_assignment(partitions: frozenset[Partition]) -> None:
        health.set_partitions(partitions)
        if partitions:
            log.info("partitions assigned", partitions=sorted(f"{t}-{p}" for t, p in partitions))
        else:
            log.info("partitions revoked")

    # A refused login or certificate is said at once, and retried, before kafka-python's
    # clients would block on it for minutes.
    kafka_options = settings.kafka_client_options()
    _retrying(
        "kafka",
        lambda: check_connection(kafka_options, timeout_s=10.0),
        (KafkaUnreachable,),
        settings,
        health,
        stop,
        log,
    )
    source = _retrying(
        "kafka",
        lambda: ImageConsumer(
            kafka_options,
            settings.images_topic,
            settings.group_id,
            client_id=settings.worker_id,
            on_assignment=on_assignment,
            auto_offset_reset=settings.auto_offset_reset,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            commit_timeout_ms=int(settings.publish_timeout_s * 1000),
            max_inflated_bytes=settings.max_inflated_batch_bytes,
        ),
        (KafkaError, OSError),  # OSError: TLS refused, connection reset
        settings,
        health,
        stop,
        log,
    )
    delivery = _retrying(
        "kafka",
        lambda: delivery_for(settings, source, kafka_options, metrics, health),
        (KafkaError, OSError),  # OSError: TLS refused, connection reset
        settings,
        health,
        stop,
        log,
    )
    fetcher = ReferenceFetcher(
        FetcherSettings(
            file_root=settings.reference_root,
            allowed_origins=settings.reference_origins,
            private_networks=settings.reference_private_networks,
            max_bytes=settings.reference_max_bytes,
            timeout_s=settings.reference_timeout_s,
            keep_alive=settings.decode_threads if settings.reference_keep_alive else 0,
        ),
        on_connection=metrics.count_reference_connection,
    )
    loop_settings = LoopSettings(
        worker_id=settings.worker_id,
        model_dir=settings.model_dir,
        batch_max_records=settings.batch_max_records,
        batch_max_wait_ms=settings.batch_max_wait_ms,
        decode_threads=settings.decode_threads,
        vote_k=settings.vote_k,
        vote_weighting=settings.vote_weighting,
        vote_threshold=settings.vote_threshold,
        vote_rule=settings.vote_rule,
        dead_letter_max_inline_bytes=settings.dead_letter_max_inline_bytes,
        backoff_initial_s=settings.backoff_initial_s,
        backoff_max_s=settings.backoff_max_s,
        reload_check_interval_s=settings.reload_check_interval_s,
        lag_interval_s=settings.lag_interval_s,
        isolate_after_failures=settings.isolate_after_failures,
        max_poll_interval_s=settings.max_poll_interval_ms / 1000,
    )
    return WorkerService(
        loop_settings,
        model=model,
        gallery=gallery,
        source=source,
        sink=None,
        delivery=delivery,
        fetcher=fetcher,
        metrics=metrics,
        health=health,
        load_model=lambda directory: _load_warm(Path(directory), settings.batch_max_records),
        open_gallery=lambda: _open_gallery(settings, metrics, health),
        batch_decoder=batch_decoder,
    )


if __name__ == "__main__":
    sys.exit(main())
