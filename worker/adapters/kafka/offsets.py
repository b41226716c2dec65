"""Kafka records in the project's broker-neutral form, and the offsets a batch commits or re-reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.kafka_record import KafkaRecord
from worker.ports import Partition


def to_kafka_record(consumed: Any) -> KafkaRecord:
    """Convert a kafka-python ``ConsumerRecord`` into the broker-neutral :class:`KafkaRecord`."""
    headers = tuple(
        (str(name), bytes(value) if value is not None else b"")
        for name, value in (consumed.headers or ())
    )
    timestamp = (
        consumed.timestamp if consumed.timestamp is not None and consumed.timestamp >= 0 else None
    )
    return KafkaRecord(
        key=consumed.key,
        value=consumed.value,
        headers=headers,
        topic=consumed.topic,
        partition=consumed.partition,
        offset=consumed.offset,
        timestamp_ms=timestamp,
    )


def next_offsets(records: Iterable[KafkaRecord]) -> dict[Partition, int]:
    """The offset to commit per partition: one past the highest offset seen."""
    offsets: dict[Partition, int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, -1), record.offset + 1)
    return offsets


def first_offsets(records: Iterable[KafkaRecord]) -> dict[Partition, int]:
    """The lowest offset per partition: where to seek back to re-read a batch."""
    offsets: dict[Partition, int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = min(offsets.get(key, record.offset), record.offset)
    return offsets
