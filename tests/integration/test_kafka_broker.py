"""The local Apache Kafka broker started by ``deploy/local/kafka.sh``, driven with kafka-python.

These tests pin down what the worker relies on: keyed records keep their partition, headers
survive the trip, a consumer group's manually committed offsets are what the admin client reads
back, and the start script reuses a broker that is already running.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kafka.record.util
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from worker.adapters.kafka.consumer import ImageConsumer
from worker.adapters.kafka.group_member import SOCKET_READ_BYTES

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO_ROOT / "deploy" / "local" / "kafka.sh"
PARTITIONS = 3
RECORDS = 24


def _image_record(index: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    key = f"image-{index:03d}".encode()
    value = bytes([index % 256]) * (100 + index)
    headers = [
        ("content-type", b"image/jpeg"),
        ("schema-version", b"1"),
        ("trace-id", f"trace-{index}".encode()),
    ]
    return key, value, headers


def _produce(bootstrap: str, topic: str, count: int) -> dict[bytes, int]:
    """Send ``count`` keyed records; return the partition each key was written to."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = {}
        for index in range(count):
            key, value, headers = _image_record(index)
            futures[key] = producer.send(topic, key=key, value=value, headers=headers)
        producer.flush(timeout=30)
        return {key: future.get(timeout=30).partition for key, future in futures.items()}
    finally:
        producer.close(timeout=10)


def _consume(consumer: KafkaConsumer, count: int, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


@pytest.fixture
def group_consumer(kafka_bootstrap: str) -> Iterator[Callable[[str, str], KafkaConsumer]]:
    """Build consumers in a consumer group with manual commits; close them after the test."""
    consumers: list[KafkaConsumer] = []

    def build(topic: str, group_id: str) -> KafkaConsumer:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        consumers.append(consumer)
        return consumer

    yield build
    for consumer in consumers:
        consumer.close(autocommit=False)


def test_producer_checksums_with_the_crc32c_extension() -> None:
    """Without the C ``crc32c`` package kafka-python falls back to a slow pure-Python CRC."""
    assert kafka.record.util.crc32c_c is not None


@pytest.mark.integration
def test_records_with_the_same_key_go_to_the_same_partition(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    topic = kafka_topic_factory(PARTITIONS)

    first = _produce(kafka_bootstrap, topic, RECORDS)
    second = _produce(kafka_bootstrap, topic, RECORDS)

    assert first == second
    assert len(set(first.values())) > 1, "24 distinct keys should spread over 3 partitions"


@pytest.mark.integration
def test_keys_values_and_headers_survive_the_broker(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    group_consumer: Callable[[str, str], KafkaConsumer],
) -> None:
    topic = kafka_topic_factory(PARTITIONS)
    _produce(kafka_bootstrap, topic, RECORDS)

    received = _consume(group_consumer(topic, f"group-{uuid.uuid4().hex[:8]}"), RECORDS)

    got = {r.key: (r.value, [(k, bytes(v)) for k, v in r.headers]) for r in received}
    expected = {key: (value, headers) for key, value, headers in map(_image_record, range(RECORDS))}
    assert got == expected


@pytest.mark.integration
def test_manually_committed_offsets_are_what_the_admin_client_reads_back(
    kafka_bootstrap: str,
    kafka_admin: KafkaAdminClient,
    kafka_topic_factory: Callable[..., str],
    group_consumer: Callable[[str, str], KafkaConsumer],
) -> None:
    topic = kafka_topic_factory(PARTITIONS)
    group_id = f"group-{uuid.uuid4().hex[:8]}"
    _produce(kafka_bootstrap, topic, RECORDS)
    consumer = group_consumer(topic, group_id)
    received = _consume(consumer, RECORDS)
    assert len(received) == RECORDS

    next_offsets: dict[TopicPartition, int] = {}
    for record in received:
        partition = TopicPartition(record.topic, record.partition)
        next_offsets[partition] = max(next_offsets.get(partition, 0), record.offset + 1)
    consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in next_offsets.items()})

    committed = kafka_admin.list_consumer_group_offsets(group_id)
    latest = consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    assert {tp: meta.offset for tp, meta in committed.items()} == next_offsets
    assert {tp: offset for tp, offset in latest.items() if offset > 0} == next_offsets


@pytest.mark.integration
def test_an_active_consumer_group_is_listed_and_described(
    kafka_bootstrap: str,
    kafka_admin: KafkaAdminClient,
    kafka_topic_factory: Callable[..., str],
    group_consumer: Callable[[str, str], KafkaConsumer],
) -> None:
    topic = kafka_topic_factory(PARTITIONS)
    group_id = f"group-{uuid.uuid4().hex[:8]}"
    _produce(kafka_bootstrap, topic, 3)
    consumer = group_consumer(topic, group_id)
    assert len(_consume(consumer, 3)) == 3

    listed = {group_id for group_id, _protocol in kafka_admin.list_consumer_groups()}
    (described,) = kafka_admin.describe_consumer_groups([group_id])

    assert group_id in listed
    assert described.state == "Stable"
    assert len(described.members) == 1


@pytest.mark.integration
def test_second_start_reuses_the_running_broker(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient
) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        pytest.skip(f"the start script only manages brokers on 127.0.0.1, not {kafka_bootstrap}")
    cluster_before = kafka_admin.describe_cluster()["cluster_id"]

    result = subprocess.run(
        [str(KAFKA_SCRIPT), "start"],
        env={**os.environ, "KAFKA_PORT": port},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "already running" in result.stdout or "reusing" in result.stdout
    assert cluster_before in result.stdout
    assert "starting Kafka" not in result.stdout


def test_the_image_consumer_reads_camera_size_photos_in_large_socket_reads(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    """Camera-size records arrive whole, through connections that read 128 KiB a system call
    (kafka-python's 4 KiB default cost the loop's thread twice the CPU a 1.4 MB photo)."""
    photos = [os.urandom(1_400_000 + i) for i in range(3)]
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=8 * 1024 * 1024
    )
    try:
        for i, photo in enumerate(photos):
            producer.send(kafka_topic, key=f"photo-{i}".encode(), value=photo, partition=i % 2)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    consumer = ImageConsumer(
        kafka_bootstrap, kafka_topic, f"test-{uuid.uuid4().hex[:8]}", "test-worker", lambda _: None
    )
    try:
        read: dict[bytes, bytes | None] = {}
        deadline = time.monotonic() + 60
        while len(read) < len(photos) and time.monotonic() < deadline:
            read.update((r.key or b"", r.value) for r in consumer.poll_batch(8, 500))
        connections = list(consumer._consumer._client._conns.values())
    finally:
        consumer.close()
    assert read == {f"photo-{i}".encode(): photo for i, photo in enumerate(photos)}
    assert connections
    assert {c.config["sock_chunk_bytes"] for c in connections} == {SOCKET_READ_BYTES}
