"""Offset arithmetic and record conversion of the Kafka adapters (no broker needed)."""

from __future__ import annotations

from kafka.consumer.fetcher import ConsumerRecord

from schemas.kafka_record import KafkaRecord
from worker.adapters.kafka import first_offsets, next_offsets, to_kafka_record


def rec(partition: int, offset: int, topic: str = "images") -> KafkaRecord:
    return KafkaRecord(key=b"k", value=b"v", topic=topic, partition=partition, offset=offset)


def test_commit_offset_is_one_past_the_highest_per_partition() -> None:
    records = [rec(0, 5), rec(1, 2), rec(0, 7), rec(0, 6)]
    assert next_offsets(records) == {("images", 0): 8, ("images", 1): 3}


def test_rewind_offset_is_the_lowest_per_partition() -> None:
    records = [rec(0, 5), rec(1, 2), rec(0, 7), rec(1, 1)]
    assert first_offsets(records) == {("images", 0): 5, ("images", 1): 1}


def test_consumer_record_becomes_a_kafka_record() -> None:
    consumed = ConsumerRecord(
        topic="images",
        partition=2,
        leader_epoch=0,
        offset=41,
        timestamp=1700000000000,
        timestamp_type=0,
        key=b"img-1",
        value=b"\xff\xd8",
        headers=[("content-type", b"image/jpeg")],
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=2,
        serialized_header_size=10,
    )
    assert to_kafka_record(consumed) == KafkaRecord(
        key=b"img-1",
        value=b"\xff\xd8",
        headers=(("content-type", b"image/jpeg"),),
        topic="images",
        partition=2,
        offset=41,
        timestamp_ms=1700000000000,
    )


def test_missing_timestamp_becomes_none() -> None:
    consumed = ConsumerRecord(
        topic="images",
        partition=0,
        leader_epoch=0,
        offset=0,
        timestamp=-1,
        timestamp_type=0,
        key=None,
        value=None,
        headers=[],
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=-1,
        serialized_header_size=-1,
    )
    assert to_kafka_record(consumed).timestamp_ms is None
