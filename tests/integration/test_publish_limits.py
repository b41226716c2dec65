"""landmark-publish sends inline every photo a worker accepts (32 MiB), and nothing larger."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from PIL import Image

from client.publish import MAX_PHOTO_BYTES
from client.publish import main as publish_main
from configuration.kafka import CONSUMER_SIZE_LIMITS

pytestmark = pytest.mark.integration


def _values(bootstrap: str, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **CONSUMER_SIZE_LIMITS
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        for _ in range(6):
            for records in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in records]
        return values
    finally:
        consumer.close()


def _publish_inline(bootstrap: str, topic: str, photo: Path) -> int:
    return publish_main(
        [
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--as",
            "inline",
            "--quiet",
            str(photo),
        ]
    )


def test_a_5_mib_photo_is_sent_inline(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """Over the producer's former 4 MiB request limit, well under the worker's 32 MiB."""
    noise = np.random.default_rng(5).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    photo = tmp_path / "big.png"
    Image.fromarray(noise).save(photo, compress_level=1)
    assert photo.stat().st_size > 5 * 1024 * 1024

    assert _publish_inline(kafka_bootstrap, kafka_topic, photo) == 0

    assert _values(kafka_bootstrap, kafka_topic) == [photo.read_bytes()]


def test_a_photo_over_the_workers_limit_is_not_sent(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    photo = tmp_path / "huge.jpg"
    photo.write_bytes(b"\xff\xd8\xff" + os.urandom(MAX_PHOTO_BYTES))

    assert _publish_inline(kafka_bootstrap, kafka_topic, photo) == 1

    assert _values(kafka_bootstrap, kafka_topic) == []
