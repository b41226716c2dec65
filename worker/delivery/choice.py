"""The delivery the worker's settings ask for, wired to the real Kafka adapters."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.adapters.kafka import ImageConsumer, OutputPublisher
from worker.adapters.kafka.transactions import PartitionProducer
from worker.delivery import Delivery
from worker.delivery.at_least_once import AtLeastOnce
from worker.delivery.exactly_once import ExactlyOnce
from worker.observability.health import HealthState
from worker.observability.metrics import WorkerMetrics
from worker.ports import Partition
from worker.settings import WorkerSettings


def delivery_for(
    settings: WorkerSettings,
    source: ImageConsumer,
    kafka_options: Mapping[str, Any],
    metrics: WorkerMetrics,
    health: HealthState,
) -> Delivery:
    """At-least-once (one producer) or exactly-once (a transactional producer per partition).

    Raises:
        kafka.errors.KafkaError: the at-least-once producer cannot reach the brokers.
    """
    budget_s = settings.max_poll_interval_ms / 1000 / 4

    def now() -> datetime:
        return datetime.now(UTC)

    if settings.delivery == "exactly-once":

        def open_producer(partition: Partition) -> PartitionProducer:
            return PartitionProducer(
                kafka_options,
                partition,
                group_id=settings.group_id,
                tags_topic=settings.tags_topic,
                dead_letter_topic=settings.dead_letter_topic,
                client_id=settings.worker_id,
                timeout_s=settings.publish_timeout_s,
                transaction_timeout_ms=settings.transaction_timeout_ms,
            )

        return ExactlyOnce(
            source,
            open_producer,
            health=health,
            metrics=metrics,
            worker_id=settings.worker_id,
            isolate_after_failures=settings.isolate_after_failures,
            isolation_budget_s=budget_s,
            offset_timeout_s=settings.publish_timeout_s,
            retry_initial_s=settings.backoff_initial_s,
            retry_max_s=settings.backoff_max_s,
            clock=now,
        )
    sink = OutputPublisher(
        kafka_options,
        settings.tags_topic,
        settings.dead_letter_topic,
        client_id=settings.worker_id,
        timeout_s=settings.publish_timeout_s,
    )
    return AtLeastOnce.isolating(
        source,
        sink,
        worker_id=settings.worker_id,
        isolate_after_failures=settings.isolate_after_failures,
        budget_s=budget_s,
        health=health,
        metrics=metrics,
        clock=now,
    )
