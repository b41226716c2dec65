"""Stalls that stop a worker making progress: a slow reference host, a frozen Milvus.

Each test runs a worker of its own (they stop it or freeze its gallery).
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition

from schemas.image_event import PhotoReference, encode_image_event
from tests.integration.poison_rig import HostileHost, PoisonRig
from tests.integration.worker_stack import (
    LOG_FILES,
    create_topics,
    delete_topics,
    load_gallery_into,
    reference_photos,
    shared_stack,
    worker_on_topics,
)
from tests.milvus_server import MilvusLiteServer

pytestmark = pytest.mark.integration


def _committed(bootstrap: str, group: str, partition: TopicPartition) -> int | None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stall-tests")
    try:
        offsets = admin.list_consumer_group_offsets(group)
    finally:
        admin.close()
    found = offsets.get(partition)
    return None if found is None else int(found.offset)


def test_sigterm_during_a_slow_fetch_stops_the_worker_at_once_without_committing(
    kafka_bootstrap: str, landmarks_dir: Path, tmp_path: Path
) -> None:
    """A host sending a byte every 0.5 s, a 60 s fetch deadline: SIGTERM took 166 s (#3)."""
    stack = shared_stack(landmarks_dir)
    topics = create_topics(kafka_bootstrap, "stall-fetch", partitions=1)
    group = f"{topics[0]}-group"
    with HostileHost(every_s=0.5) as host:
        worker = worker_on_topics(
            stack,
            kafka_bootstrap,
            topics,
            "worker-stall",
            tmp_path / "worker.log",
            ["--reference-origins", f"http://{host.address}", "--reference-timeout-s", "60"],
        )
        rig = PoisonRig(kafka_bootstrap, topics, worker, sorted(landmarks_dir.glob("*/*.jpg"))[:2])
        try:
            worker.wait_ready()
            before = rig.send_photo(0, "before-slow")
            rig.check([before])
            slow = encode_image_event(
                PhotoReference(image_id="slow", uri=f"http://{host.address}/slow.jpg")
            )
            rig.send(0, slow, "none")
            assert host.requested.wait(60), "the worker never fetched the slow reference"
            time.sleep(1.0)

            asked = time.monotonic()
            status = worker.terminate(timeout_s=60)
            took = time.monotonic() - asked

            assert status == 0
            assert took < 10, f"the worker took {took:.1f} s to stop"
            assert _committed(kafka_bootstrap, group, TopicPartition(topics[0], 0)) == 1
            dead = rig.answers([], timeout_s=1).dead
            assert [d["original_key"] for d in dead] == []
        finally:
            rig.close()
            worker.kill()
            delete_topics(kafka_bootstrap, topics)


def test_a_frozen_milvus_makes_the_worker_unready_and_counts_as_errors(
    kafka_bootstrap: str, landmarks_dir: Path, tmp_path: Path
) -> None:
    """Milvus frozen for 15 s (a call's limit is 10 s): /readyz stayed 200, nothing was counted."""
    stack = shared_stack(landmarks_dir)
    server = MilvusLiteServer(tmp_path / "milvus")
    server.start()
    LOG_FILES.append(server.log_path)
    topics = create_topics(kafka_bootstrap, "stall-milvus", partitions=1)
    worker = worker_on_topics(
        dataclasses.replace(stack, milvus_uri=server.uri),
        kafka_bootstrap,
        topics,
        "worker-frozen-milvus",
        tmp_path / "worker.log",
    )
    rig = PoisonRig(kafka_bootstrap, topics, worker, sorted(landmarks_dir.glob("*/*.jpg"))[5:7])
    try:
        load_gallery_into(
            server.uri, stack.model_dir, "landmarks", reference_photos(landmarks_dir), "frozen"
        )
        worker.wait_ready()
        server.signal_all(signal.SIGSTOP)
        frozen_at = time.monotonic()
        sent = [rig.send_photo(0, "while-frozen") for _ in range(2)]
        statuses = []
        while time.monotonic() - frozen_at < 15:
            statuses.append(worker.get("/readyz")[0])
            time.sleep(0.5)
        counted = worker.metric("landmark_worker_errors_total", {"kind": "gallery_timeout"})
        server.signal_all(signal.SIGCONT)

        assert 503 in statuses
        assert counted >= 1
        rig.check(sent, timeout_s=90)
    finally:
        server.signal_all(signal.SIGCONT)
        rig.close()
        worker.kill()
        server.stop()
        delete_topics(kafka_bootstrap, topics)
