"""Model and gallery versions: refusing a mismatched gallery, switching without a restart.

The switch runs twice: with the gallery in Milvus Lite's gRPC server (``[lite-server]``) and in
the session's real Milvus 2.3 standalone server (``[milvus-2.3]``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.worker_stack import (
    Stack,
    WorkerProcess,
    create_topics,
    delete_topics,
    load_gallery_into,
    publish,
    read_outputs,
    reference_photos,
    shared_stack,
    worker_on_topics,
)
from tests.milvus_server import collections_dropped_after

pytestmark = pytest.mark.integration


def _reexport(source: Path, target: Path) -> str:
    """Save the same network again as a new export (a new file, hence a new model version)."""
    from trainer.model.export import export_model, load_export

    model, manifest = load_export(source)
    return export_model(
        model,
        backbone=manifest.backbone,
        out_dir=target,
        preprocessing=manifest.preprocessing,
        vote=manifest.vote,
    ).model_version


def test_worker_refuses_a_gallery_built_for_another_model(
    landmarks_dir: Path, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.cli import EXIT_INCOMPATIBLE, main

    stack = shared_stack(landmarks_dir)
    other_version = _reexport(stack.model_dir, tmp_path / "other-model")

    status = main(
        [
            "--model-dir",
            str(tmp_path / "other-model"),
            "--milvus-uri",
            stack.milvus_uri,
            "--bootstrap-servers",
            kafka_bootstrap,
            "--http-port",
            "0",
            "--log-format",
            "json",
        ]
    )

    message = capsys.readouterr().err
    assert status == EXIT_INCOMPATIBLE
    assert "does not match model" in message and other_version in message


@pytest.fixture(params=["lite-server", "milvus-2.3"])
def switching_worker(
    request: pytest.FixtureRequest, landmarks_dir: Path, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[tuple[WorkerProcess, Stack, str, tuple[str, str, str]]]:
    """A worker on its own copy of the export and its own gallery alias (dropped afterwards).

    Its galleries are in the shared stack's Milvus Lite server, or in the real Milvus server.
    """
    stack = shared_stack(landmarks_dir)
    if request.param == "milvus-2.3":
        server = request.getfixturevalue("milvus_standalone")
        stack = dataclasses.replace(stack, milvus_uri=server.uri, server=server)
    model_dir = tmp_path / "served-model"
    shutil.copytree(stack.model_dir, model_dir)
    alias = f"switch_{uuid.uuid4().hex[:8]}"
    with collections_dropped_after(stack.milvus_uri):
        load_gallery_into(
            stack.milvus_uri, model_dir, alias, reference_photos(landmarks_dir), "first"
        )
        topics = create_topics(kafka_bootstrap, "worker-versions")
        worker = worker_on_topics(
            dataclasses.replace(stack, model_dir=model_dir),
            kafka_bootstrap,
            topics,
            "worker-versions",
            tmp_path / "worker.log",
            extra_args=["--gallery-alias", alias],
        )
        try:
            worker.wait_ready()
            yield worker, dataclasses.replace(stack, model_dir=model_dir), alias, topics
        finally:
            worker.kill()
            delete_topics(kafka_bootstrap, topics)


def _tag_versions(
    bootstrap: str, topics: tuple[str, str, str], paths: list[Path], id_map: Path
) -> set[tuple[str, str]]:
    ids = {p["image_id"] for p in publish(bootstrap, topics[0], paths, id_map)}
    values = read_outputs(
        bootstrap,
        [topics[1]],
        expected=10**9,
        timeout_s=60,
        until=lambda v: ids <= {json.loads(x)["image_id"] for x in v[topics[1]]},
    )
    events = [json.loads(v) for v in values[topics[1]]]
    return {(e["model_version"], e["gallery_version"]) for e in events if e["image_id"] in ids}


def _wait_for_log(worker: WorkerProcess, text: str, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while text not in worker.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"worker never logged {text!r}:\n{worker.log()}")
        time.sleep(0.3)


def test_new_gallery_then_new_model_are_served_without_a_restart(
    switching_worker: tuple[WorkerProcess, Stack, str, tuple[str, str, str]],
    landmarks_dir: Path,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    worker, stack, alias, topics = switching_worker
    photos = sorted(landmarks_dir.glob("*/*.jpg"))[3::13]
    first_model = stack.model_version
    assert _tag_versions(kafka_bootstrap, topics, photos[:4], tmp_path / "1.jsonl") == {
        (first_model, "first")
    }

    load_gallery_into(
        stack.milvus_uri,
        stack.model_dir,
        alias,
        reference_photos(landmarks_dir, offset=2),
        "second",
    )
    _wait_for_log(worker, "gallery switched")
    assert _tag_versions(kafka_bootstrap, topics, photos[4:8], tmp_path / "2.jsonl") == {
        (first_model, "second")
    }

    new_model = _reexport(stack.model_dir, stack.model_dir)
    load_gallery_into(
        stack.milvus_uri, stack.model_dir, alias, reference_photos(landmarks_dir), "third"
    )
    _wait_for_log(worker, "switched model and gallery")
    assert _tag_versions(kafka_bootstrap, topics, photos[8:12], tmp_path / "3.jsonl") == {
        (new_model, "third")
    }
    assert worker.process.poll() is None
