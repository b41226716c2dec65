"""While Milvus is unreachable the worker backs off without committing, then catches up."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.integration.worker_stack import (
    LOG_FILES,
    create_topics,
    delete_topics,
    load_gallery_into,
    publish,
    read_outputs,
    reference_photos,
    shared_stack,
    worker_on_topics,
)
from tests.milvus_server import MilvusLiteServer

pytestmark = pytest.mark.integration


def _tagged_ids(bootstrap: str, topic: str, wanted: set[str], timeout_s: float) -> set[str]:
    values = read_outputs(
        bootstrap,
        [topic],
        expected=10**9,
        timeout_s=timeout_s,
        until=lambda v: wanted <= {json.loads(x)["image_id"] for x in v[topic]},
    )
    return {json.loads(v)["image_id"] for v in values[topic]} & wanted


def test_worker_backs_off_while_milvus_is_down_and_loses_nothing(
    landmarks_dir: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = shared_stack(landmarks_dir)
    server = MilvusLiteServer(tmp_path / "milvus")
    server.start()
    LOG_FILES.append(server.log_path)
    topics = create_topics(kafka_bootstrap, "worker-backoff")
    worker = None
    restarted = MilvusLiteServer(tmp_path / "milvus", port=server.port)
    try:
        load_gallery_into(
            server.uri, stack.model_dir, "landmarks", reference_photos(landmarks_dir), "backoff"
        )
        worker = worker_on_topics(
            dataclasses.replace(stack, milvus_uri=server.uri),
            kafka_bootstrap,
            topics,
            "worker-backoff",
            tmp_path / "worker.log",
            extra_args=["--backoff-max-s", "2"],
        )
        worker.wait_ready()
        photos = sorted(landmarks_dir.glob("*/*.jpg"))[6::17]
        server.stop()

        ids = {
            p["image_id"]
            for p in publish(kafka_bootstrap, topics[0], photos[:6], tmp_path / "ids.jsonl")
        }
        during = _tagged_ids(kafka_bootstrap, topics[1], ids, timeout_s=8)
        errors = worker.metric("landmark_worker_errors_total", {"kind": "gallery_unavailable"})
        ready_status, _ = worker.get("/readyz")

        restarted.start()
        after = _tagged_ids(kafka_bootstrap, topics[1], ids, timeout_s=90)

        assert during == set()
        assert errors > 0
        assert ready_status == 503
        assert worker.process.poll() is None
        assert after == ids
    finally:
        if worker is not None:
            worker.kill()
        restarted.stop()
        server.stop()
        delete_topics(kafka_bootstrap, topics)
