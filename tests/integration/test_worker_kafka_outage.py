"""While Kafka does not answer, the worker backs off without committing, then catches up.

The broker is a private one (``deploy/local/kafka.sh`` on a free port, its own data folder), so
that freezing it cannot disturb the other tests. ``SIGSTOP`` freezes it mid-stream: connections
stay open but nothing answers, the way a hung or partitioned broker looks to a client. The
worker's acknowledgement and commit waits are 3 s, so the batches in hand fail and are retried.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.private_broker import PrivateBroker
from tests.integration.private_broker import private_broker as start_private_broker
from tests.integration.worker_stack import (
    WorkerProcess,
    create_topics,
    publish,
    read_outputs,
    shared_stack,
    worker_on_topics,
)

pytestmark = pytest.mark.integration

PAUSE_S = 12.0
PHOTOS = 120


@pytest.fixture
def private_broker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[PrivateBroker]:
    """A second single-node Kafka on a free port (``kafka_bootstrap``: the jars are there)."""
    with start_private_broker(tmp_path / "kafka") as broker:
        yield broker


def test_worker_backs_off_while_kafka_is_frozen_and_loses_nothing(
    private_broker: PrivateBroker, landmarks_dir: Path, tmp_path: Path
) -> None:
    stack = shared_stack(landmarks_dir)
    bootstrap = private_broker.bootstrap
    topics = create_topics(bootstrap, "worker-kafka-outage")
    # Published before the worker starts, so that its first fetch reads them all: the frozen
    # broker then meets a worker with photos in hand, whose outputs cannot be acknowledged.
    photos = sorted(landmarks_dir.glob("*/*.jpg"))[3::11][:PHOTOS]
    ids = {p["image_id"] for p in publish(bootstrap, topics[0], photos, tmp_path / "ids.jsonl")}
    worker = worker_on_topics(
        stack,
        bootstrap,
        topics,
        "worker-outage",
        tmp_path / "worker.log",
        extra_args=["--batch-max-records", "2", "--publish-timeout-s", "3", "--backoff-max-s", "2"],
    )
    try:
        deadline = time.monotonic() + 240
        while _tagged_so_far(worker) == 0:
            assert worker.process.poll() is None, worker.log()
            assert time.monotonic() < deadline, "the worker tagged nothing before the outage"
            time.sleep(0.05)

        os.kill(private_broker.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        during_ready = []
        while time.monotonic() - frozen_at < PAUSE_S:
            during_ready.append(worker.get("/readyz")[0])
            time.sleep(0.5)
        # publish_failed or kafka (the commit timed out), by where the batch in hand was
        failures = worker.metric("landmark_worker_errors_total")
        alive_during = worker.process.poll() is None
        os.kill(private_broker.pid, signal.SIGCONT)

        values = read_outputs(
            bootstrap,
            [topics[1], topics[2]],
            expected=10**9,
            timeout_s=120,
            until=lambda v: ids <= {json.loads(x)["image_id"] for x in v[topics[1]]},
        )
        tagged = [json.loads(v)["image_id"] for v in values[topics[1]]]
        committed = _committed(bootstrap, f"{topics[0]}-group", topics[0], expected=PHOTOS)

        assert alive_during and worker.process.poll() is None
        assert failures > 0
        assert 503 in during_ready
        assert values[topics[2]] == []
        assert set(tagged) == ids  # every photo tagged; a retried batch may repeat a few
        assert len(tagged) - len(ids) <= 40  # only batches retried during the outage repeat
        assert committed == PHOTOS
        assert worker.get("/readyz")[0] == 200
    finally:
        worker.kill()


def _tagged_so_far(worker: WorkerProcess) -> float:
    """Photos the worker has finished, 0 while its status endpoint is not up yet."""
    try:
        return worker.metric("landmark_worker_images_total")
    except OSError:
        return 0.0


def _committed(
    bootstrap: str, group: str, topic: str, expected: int, timeout_s: float = 30.0
) -> int:
    """Offsets the group has committed on ``topic``, summed over partitions.

    Waits up to ``timeout_s`` for the sum to reach ``expected``.
    """
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        total = 0
        while time.monotonic() < deadline:
            offsets = admin.list_consumer_group_offsets(group)
            total = sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)
            if total >= expected:
                break
            time.sleep(0.5)
        return total
    finally:
        admin.close()
