"""A small real model export and Milvus Lite gallery, and worker processes, for integration tests.

The model is the project's own embedding model (MobileNetV2 with ImageNet weights from the offline
checkpoint, 96 px, 64-d projection, not fine-tuned) exported by ``trainer.model.export``; the gallery is
loaded by ``trainer.gallery.loader`` into Milvus Lite run as its gRPC server (a Milvus Lite
``.db`` file admits one process only, and the tests run several workers). Workers run as real
``landmark-worker`` processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.kafka_topics import wait_for_leaders
from tests.milvus_server import MilvusLiteServer, MilvusStandaloneServer

REPO_ROOT = Path(__file__).resolve().parents[2]
INPUT_SIZE = 96
LANDMARKS = ("tajmahal", "charminar", "india_gate", "golden_temple")
REFERENCES_PER_LANDMARK = 6

#: Log files of the worker processes (and Milvus servers) started by the tests; a failing
#: integration test quotes the ones written during it (``tests/integration/conftest.py``).
LOG_FILES: list[Path] = []

#: Lines that say nothing about the failure: gRPC's keepalive chatter and traceback frames.
_NOISE_PREFIXES = ("I1", "E1", "W1", "  ", "\t", "Traceback", "During handling", "The above")


def log_digest(path: Path, lines: int = 60) -> str:
    """The last ``lines`` meaningful lines of a log file (noise and traceback frames dropped)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(cannot read {path}: {error})"
    kept = [
        line[:400]
        for line in text.splitlines()
        if line.strip() and not line.startswith(_NOISE_PREFIXES)
    ]
    return "\n".join(kept[-lines:])


@dataclass(frozen=True)
class Stack:
    model_dir: Path
    milvus_uri: str
    model_version: str
    gallery_version: str
    query_photos: tuple[Path, ...]
    #: Milvus Lite's gRPC server; a test may point a copy at the real Milvus server instead.
    server: MilvusLiteServer | MilvusStandaloneServer


def build_stack(directory: Path, landmarks_dir: Path) -> Stack:
    """Export a small model and load a small gallery under ``directory``."""
    from pymilvus import MilvusClient

    from schemas.preprocessing import PreprocessingSpec
    from schemas.vote import VoteSettings
    from trainer.data.photos import read_landmark_folders
    from trainer.gallery.loader import GalleryLoadSettings, load_gallery
    from trainer.model.embedding import EmbeddingModelConfig, assemble, build_embedding_model
    from trainer.model.export import export_model

    photos = [p for p in read_landmark_folders(landmarks_dir) if p.landmark_id in LANDMARKS]
    by_landmark: dict[str, list] = {}
    for photo in sorted(photos, key=lambda p: str(p.path)):
        by_landmark.setdefault(photo.landmark_id, []).append(photo)
    references = [p for group in by_landmark.values() for p in group[:REFERENCES_PER_LANDMARK]]
    queries = tuple(
        p.path
        for group in by_landmark.values()
        for p in group[REFERENCES_PER_LANDMARK : REFERENCES_PER_LANDMARK + 4]
    )

    parts = build_embedding_model(
        EmbeddingModelConfig(backbone="mobilenet_v2", input_size=INPUT_SIZE, embedding_dim=64),
        weights="imagenet",
    )
    model = assemble(parts)
    model_dir = directory / "model"
    manifest = export_model(
        model,
        backbone="mobilenet_v2",
        out_dir=model_dir,
        preprocessing=PreprocessingSpec(input_size=INPUT_SIZE),
        vote=VoteSettings(k=5, weighting="similarity", threshold=0.0),
    )
    server = MilvusLiteServer(directory / "milvus-data")
    server.start()
    client = MilvusClient(uri=server.uri)
    try:
        report = load_gallery(
            client,
            model,
            manifest,
            references,
            GalleryLoadSettings(uri=server.uri),
            progress=lambda _p: None,
        )
    finally:
        client.close()
    return Stack(
        model_dir=model_dir,
        milvus_uri=server.uri,
        model_version=manifest.model_version,
        gallery_version=report.gallery_version,
        query_photos=queries,
        server=server,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WorkerProcess:
    """A ``landmark-worker`` subprocess with its own status port and log file."""

    def __init__(
        self,
        stack: Stack,
        *,
        bootstrap: str,
        images_topic: str,
        tags_topic: str,
        dead_letter_topic: str,
        group_id: str,
        worker_id: str,
        log_path: Path,
        reference_root: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.worker_id = worker_id
        self.log_path = log_path
        LOG_FILES.append(log_path)
        args = [
            sys.executable,
            "-m",
            "worker.cli",
            "--model-dir",
            str(stack.model_dir),
            "--milvus-uri",
            stack.milvus_uri,
            "--bootstrap-servers",
            bootstrap,
            "--images-topic",
            images_topic,
            "--tags-topic",
            tags_topic,
            "--dead-letter-topic",
            dead_letter_topic,
            "--group-id",
            group_id,
            "--worker-id",
            worker_id,
            "--http-port",
            str(self.port),
            "--batch-max-records",
            "8",
            "--batch-max-wait-ms",
            "200",
            "--decode-threads",
            "2",
            "--log-format",
            "json",
            "--reload-check-interval-s",
            "1",
            *([] if reference_root is None else ["--reference-root", str(reference_root)]),
            *extra_args,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, _ = self.get("/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout_s} s:\n{self.log()}")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        _, body = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()
                ):
                    total += sample.value
        return total

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; a worker still running after ``timeout_s`` is killed (so that no
        test leaves one behind) and the timeout raised."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            raise
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self._log.close()


def worker_on_topics(
    stack: Stack,
    bootstrap: str,
    topics: tuple[str, str, str],
    worker_id: str,
    log_path: Path,
    extra_args: Sequence[str] = (),
) -> WorkerProcess:
    """A worker on ``create_topics``' topics, in the group ``<images topic>-group``."""
    return WorkerProcess(
        stack,
        bootstrap=bootstrap,
        images_topic=topics[0],
        tags_topic=topics[1],
        dead_letter_topic=topics[2],
        group_id=f"{topics[0]}-group",
        worker_id=worker_id,
        log_path=log_path,
        extra_args=extra_args,
    )


def read_outputs(
    bootstrap: str,
    topics: Sequence[str],
    expected: int,
    timeout_s: float = 120.0,
    until: Callable[[dict[str, list[bytes]]], bool] | None = None,
    linger_s: float = 1.0,
    isolation_level: str = "read_uncommitted",
) -> dict[str, list[bytes]]:
    """Read ``topics`` from the beginning until ``expected`` records (or ``until`` holds).

    Gives up after ``timeout_s``; then reads ``linger_s`` more, so that duplicates are seen too.
    ``isolation_level="read_committed"`` reads only outputs of committed transactions.
    """
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    from configuration.kafka import CONSUMER_SIZE_LIMITS

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        **CONSUMER_SIZE_LIMITS,
    )
    try:
        partitions = []
        for topic in topics:
            found = None
            deadline = time.monotonic() + 20
            while not found and time.monotonic() < deadline:
                found = consumer.partitions_for_topic(topic)
                time.sleep(0.1)
            partitions += [TopicPartition(topic, p) for p in sorted(found or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: dict[str, list[bytes]] = {t: [] for t in topics}
        deadline = time.monotonic() + timeout_s
        count = 0
        while (
            count < expected
            and time.monotonic() < deadline
            and not (until is not None and until(values))
        ):
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    values[record.topic].append(record.value)
                    count += 1
        # a short extra read so that duplicates beyond ``expected`` are seen too
        end = time.monotonic() + linger_s
        while time.monotonic() < end:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    values[record.topic].append(record.value)
        return values
    finally:
        consumer.close()


def ids_of(
    tag_values: Sequence[bytes], dead_values: Sequence[bytes]
) -> tuple[list[str], list[str]]:
    tagged = [json.loads(v)["image_id"] for v in tag_values]
    dead = [json.loads(v)["original_key"] for v in dead_values]
    return tagged, dead


_STACKS: dict[Path, Stack] = {}


def shared_stack(landmarks_dir: Path) -> Stack:
    """One stack per test session (both integration modules of the worker use it)."""
    if landmarks_dir not in _STACKS:
        import atexit
        import shutil
        import tempfile

        directory = Path(tempfile.mkdtemp(prefix="landmark-worker-stack-"))
        stack = build_stack(directory, landmarks_dir)
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        atexit.register(stack.server.stop)
        _STACKS[landmarks_dir] = stack
    return _STACKS[landmarks_dir]


def publish(
    bootstrap: str, topic: str, paths: Sequence[Path], id_map: Path, *extra: str
) -> list[dict[str, str]]:
    """Publish with the real ``landmark-publish`` command (in-process); returns its id map."""
    from client.publish import main as publish_main

    status = publish_main(
        [
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--quiet",
            "--id-map",
            str(id_map),
            *extra,
            *map(str, paths),
        ]
    )
    if status != 0:
        raise AssertionError(f"landmark-publish exited with {status}")
    return [json.loads(line) for line in id_map.read_text().splitlines()]


def create_topics(bootstrap: str, prefix: str, partitions: int = 4) -> tuple[str, str, str]:
    """Fresh images, tags and dead-letter topics."""
    import uuid

    from kafka.admin import KafkaAdminClient, NewTopic

    stem = f"{prefix}-{uuid.uuid4().hex[:8]}"
    names = (f"{stem}-images", f"{stem}-tags", f"{stem}-dlq")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="worker-tests")
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        for name in names:
            wait_for_leaders(admin, name, partitions)
    finally:
        admin.close()
    return names


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="worker-tests")
    try:
        admin.delete_topics(list(names))
    except Exception:  # the broker may already have gone; nothing to clean then
        pass
    finally:
        admin.close()


def reference_photos(landmarks_dir: Path, offset: int = 0) -> list:
    """``REFERENCES_PER_LANDMARK`` photos of each test landmark, starting at ``offset``."""
    from trainer.data.photos import read_landmark_folders

    by_landmark: dict[str, list] = {}
    for photo in sorted(read_landmark_folders(landmarks_dir), key=lambda p: str(p.path)):
        if photo.landmark_id in LANDMARKS:
            by_landmark.setdefault(photo.landmark_id, []).append(photo)
    return [
        p
        for group in by_landmark.values()
        for p in group[offset : offset + REFERENCES_PER_LANDMARK]
    ]


def load_gallery_into(
    milvus_uri: str, model_dir: Path, alias: str, photos: Sequence, gallery_version: str
) -> None:
    """Embed ``photos`` with the export in ``model_dir`` and move ``alias`` to them."""
    from pymilvus import MilvusClient

    from trainer.gallery.loader import GalleryLoadSettings, load_gallery
    from trainer.model.export import load_export

    model, manifest = load_export(model_dir)
    client = MilvusClient(uri=milvus_uri)
    try:
        load_gallery(
            client,
            model,
            manifest,
            photos,
            GalleryLoadSettings(uri=milvus_uri, alias=alias, gallery_version=gallery_version),
            progress=lambda _p: None,
        )
    finally:
        client.close()
