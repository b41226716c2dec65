"""The worker's Prometheus metrics, in a registry of their own.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` histograms). The Grafana
dashboard in ``deploy/grafana/`` queries exactly these names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

OUTCOMES = ("tagged", "no_landmark", "dead_lettered")
STAGES = ("decode", "embed", "search", "vote", "publish", "commit")

_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class WorkerMetrics:
    """All metrics one worker exports.

    Args:
        registry: the registry to register into; a fresh one by default, so that several
            workers (or tests) in one process do not collide.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.images = Counter(
            "landmark_worker_images",
            "Photos processed, by outcome (and dead-letter reason).",
            ["outcome", "reason"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "landmark_worker_stage_seconds",
            "Time per batch spent in each stage.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "landmark_worker_end_to_end_seconds",
            "From the photo's published-at header to its tag event.",
            buckets=_END_TO_END_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "landmark_worker_batch_size",
            "Records per batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batches = Counter("landmark_worker_batches", "Batches committed.", registry=r)
        self.consumer_lag = Gauge(
            "landmark_worker_consumer_lag",
            "Records behind the end of each assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.errors = Counter(
            "landmark_worker_errors",
            "Errors the worker recovered from, by kind.",
            ["kind"],
            registry=r,
        )
        self.transactions = Counter(
            "landmark_worker_transactions",
            "Kafka transactions of the exactly-once mode (one per input partition of a batch), "
            "by result: committed, aborted, in_doubt (commit unanswered), fenced.",
            ["result"],
            registry=r,
        )
        self.transaction_seconds = Histogram(
            "landmark_worker_transaction_seconds",
            "Exactly-once mode: seconds to initialise a partition's transactional producer "
            "(step=init) and to publish and commit one partition's transaction (step=commit).",
            ["step"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.model_info = Info(
            "landmark_worker_model",
            "Model and gallery the worker is using.",
            registry=r,
        )
        self.reference_connections = Counter(
            "landmark_worker_reference_connections",
            "Connections the http(s) fetches of photo references used, by how: new (opened for "
            "the fetch) or kept (open since an earlier fetch of the same store).",
            ["how"],
            registry=r,
        )
        self.ready = Gauge(
            "landmark_worker_ready",
            "1 when the worker is ready to process photos.",
            registry=r,
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for outcome in ("tagged", "no_landmark"):
            self.images.labels(outcome=outcome, reason="")
        for result in ("committed", "aborted", "in_doubt", "fenced"):
            self.transactions.labels(result=result)
        for how in ("new", "kept"):
            self.reference_connections.labels(how=how)

    def observe_outcomes(
        self, tagged: int, no_landmark: int, dead_letter_reasons: Iterable[str]
    ) -> None:
        """Count one batch's photos by outcome."""
        if tagged:
            self.images.labels(outcome="tagged", reason="").inc(tagged)
        if no_landmark:
            self.images.labels(outcome="no_landmark", reason="").inc(no_landmark)
        for reason in dead_letter_reasons:
            self.images.labels(outcome="dead_lettered", reason=reason).inc()

    def count_reference_connection(self, how: str) -> None:
        """Count one connection an http(s) fetch used: ``new`` or ``kept``."""
        self.reference_connections.labels(how=how).inc()

    def observe_stages(self, seconds_by_stage: Mapping[str, float]) -> None:
        """Record one batch's time in each stage."""
        for stage, seconds in seconds_by_stage.items():
            self.stage_seconds.labels(stage=stage).observe(seconds)

    def set_versions(self, model_version: str, gallery_version: str, worker_id: str) -> None:
        """Publish the model and gallery versions now in use."""
        self.model_info.info(
            {
                "model_version": model_version,
                "gallery_version": gallery_version,
                "worker_id": worker_id,
            }
        )

    def set_lag(self, lag_by_partition: Mapping[tuple[str, int], int]) -> None:
        """Replace the lag gauges with the currently assigned partitions' lag."""
        self.consumer_lag.clear()
        for (topic, partition), lag in lag_by_partition.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
