"""The worker loop's own ceiling: photos/s of the real pipelined loop when decoding, the model and
the gallery cost next to nothing, and where its CPU goes, thread by thread.

On a GPU machine the model embeds ~14,000 photos/s and the GPU decodes hundreds to thousands; what
is left is the loop itself: parsing events, the decode stage's bookkeeping, building tag events,
serialising and publishing them, polling and committing, in Python threads that share one
interpreter lock. This bench measures that part alone, so that it can be compared with the
1,500 photos/s a GPU worker is asked for, and improved on a machine without a GPU.

What runs: the real :class:`worker.service.WorkerService` with

* an instant batch decoder (takes every photo, hands back one preallocated picture),
* an instant model (hands back preallocated unit rows) and an instant gallery (the same ``k``
  neighbours for every query),
* inline image events of ``--payload-kb`` each, from memory (``memory``) or from a fresh topic of
  the local Kafka (``kafka``: the real consumer, offsets committed to the broker), and tag events
  to a sink that keeps nothing (``memory``) or to the local Kafka (``kafka``: the real publisher,
  ``acks=all``).

Printed: photos/s for each source x sink, and the CPU each thread of the worker spent a photo
(from ``/proc/self/task``): ``loop`` (poll, commit, the embed call, waiting), ``prepare`` (event
parsing, the decode stage), ``decode`` (the pool), ``publish`` (search, vote, tag events, the
producer), ``kafka`` (kafka-python's own I/O threads). Timings only; nothing is asserted.

Photos by reference instead (``--photos file``, ``http``, ``https``: the worker's fetcher in the
decoding threads; ``http(s)`` from ``bench/photo_server.py`` on this machine, with
``--keep-alive`` connections kept), real JPEGs instead of random payloads (``--jpegs DIR``, or
``--camera N`` synthetic 12 MP ones), and the GPU decoder's own checks of each photo
(``--takes checked``).

    .venv/bin/python bench/bench_loop.py                          # memory and Kafka, 64 KB photos
    .venv/bin/python bench/bench_loop.py --payload-kb 1400 --batches 20
    .venv/bin/python bench/bench_loop.py --payload-kb 1400 --photos https --keep-alive 0
    .venv/bin/python bench/bench_loop.py --camera 16 --photos file --takes checked
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from loop_rig import NOW, CountingSink, ReplaySource, bench_service, camera_jpeg, image_records
from photo_server import PhotoServer

from configuration.kafka import DEFAULT_BOOTSTRAP
from schemas.kafka_record import KafkaRecord
from schemas.manifest import ModelManifest
from schemas.preprocessing import PreprocessingSpec
from schemas.tag_event import Neighbour
from schemas.vote import VoteSettings

INPUT_SIZE = 224
DIM = 1280
K = 10
#: Topics this run made (deleted at the end: camera-size photos fill the broker's disk fast).
TOPICS: list[str] = []


def manifest() -> ModelManifest:
    return ModelManifest(
        model_version="loop-bench",
        backbone="none",
        input_size=INPUT_SIZE,
        embedding_dim=DIM,
        preprocessing=PreprocessingSpec(input_size=INPUT_SIZE),
        vote=VoteSettings(k=K, weighting="similarity", threshold=0.5, rule="weighted_knn"),
        created_at=NOW,
        keras_version="none",
    )


class InstantModel:
    """Preallocated unit rows, whatever the photos."""

    model_version = "loop-bench"
    embedding_dim = DIM

    def __init__(self, batch: int) -> None:
        rows = np.random.default_rng(1).normal(size=(batch, DIM)).astype(np.float32)
        self._rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        self.manifest = manifest()

    def embed(self, images: Any) -> np.ndarray:
        rows: np.ndarray = self._rows[: len(images)]
        return rows


class InstantDecoder:
    """Takes every photo; one preallocated picture for each."""

    def __init__(self) -> None:
        self._picture = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)

    def takes(self, data: bytes, spec: PreprocessingSpec) -> bool:
        return True

    def decode(self, photos: Sequence[bytes], spec: PreprocessingSpec) -> list[Any]:
        return [self._picture] * len(photos)


class CheckingDecoder(InstantDecoder):
    """The instant decoder behind the GPU decoder's own choice of what it takes (the JPEG header
    and structure checks it runs on every photo in the decoding threads)."""

    def __init__(self) -> None:
        super().__init__()
        from worker.adapters.gpu_decode.decoder import GpuPhotoDecoder

        self._gpu = GpuPhotoDecoder(self._never, self._never)

    @staticmethod
    def _never(*_: Any) -> Any:
        raise AssertionError("the bench decodes nothing on a device")

    def takes(self, data: bytes, spec: PreprocessingSpec) -> bool:
        return self._gpu.takes(data, spec)


class InstantGallery:
    """The same ``k`` neighbours (ten landmarks) for every query."""

    model_version = "loop-bench"
    gallery_version = "loop-bench"

    def __init__(self) -> None:
        self._found = [
            Neighbour(f"ref-{i}", f"landmark-{i % 3}", f"Landmark {i % 3}", 0.2 + 0.01 * i)
            for i in range(K)
        ]

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        return [self._found[:k] for _ in range(len(embeddings))]

    def check_compatible(self, model_version: str, embedding_dim: int) -> None:
        """Built for the bench's model."""

    def refresh(self) -> bool:
        return False

    def close(self) -> None:
        """Nothing to release."""


def payloads(
    count: int,
    payload_kb: int,
    folder: Path | None = None,
    keep: Callable[[bytes], bool] = lambda _: True,
    camera: int = 0,
) -> list[bytes]:
    """``count`` distinct photos of ``payload_kb`` KB (a JPEG signature, then random bytes: the
    instant decoder takes anything), or the JPEGs of ``folder``, or ``camera`` synthetic 12 MP
    JPEGs, those that ``keep`` accepts (repeated up to ``count``)."""
    if folder is not None or camera:
        if folder is not None:
            real = [path.read_bytes() for path in sorted(folder.glob("*.jpg"))]
        else:
            real = [camera_jpeg(seed, 4000, 3000) for seed in range(camera)]
        real = [photo for photo in real if keep(photo)]
        if not real:
            raise SystemExit(f"no JPEG to use in {folder or 'the synthetic photos'}")
        return [real[i % len(real)] for i in range(count)]
    rng = np.random.default_rng(3)
    return [
        b"\xff\xd8" + rng.integers(0, 256, payload_kb * 1024 - 2, dtype=np.uint8).tobytes()
        for _ in range(count)
    ]


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Native id → (group, CPU seconds) of each live Python thread of this process (Python 3.11
    does not name the OS threads: ``native_id`` maps one to the other)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out[thread.native_id or 0] = (_group(thread.name), cpu)
    return out


def _group(name: str) -> str:
    for prefix in ("prepare", "publish", "decode"):
        if name.startswith(prefix):
            return prefix
    if name.startswith("kafka"):  # kafka-python's heartbeat and producer threads
        return "kafka"
    return "loop" if name == "bench-loop" else "other"


class CountingSource:
    """A source that asks the service to stop once ``total`` records were polled and a poll
    finds nothing more."""

    def __init__(self, inner: Any, total: int) -> None:
        self._inner, self._total, self._polled = inner, total, 0
        self.on_empty: Callable[[], None] = lambda: None
        self.first_records_at: float | None = None  # group joined, partitions assigned

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def poll_batch(self, max_records: int, max_wait_ms: int) -> list[KafkaRecord]:
        records: list[KafkaRecord] = self._inner.poll_batch(max_records, max_wait_ms)
        if records and self.first_records_at is None:
            self.first_records_at = time.perf_counter()
        self._polled += len(records)
        if not records and self._polled >= self._total:
            self.on_empty()
        return records


def run(
    source_kind: str, sink_kind: str, args: argparse.Namespace
) -> tuple[float, dict[str, float]]:
    """Photos a second of one loop run, and the CPU ms a photo of each thread group."""
    total = args.batch * args.batches
    photo_dir = None if args.photos == "inline" else Path(tempfile.mkdtemp(prefix="bench-loop-"))
    served = args.photos in ("http", "https") and photo_dir is not None
    server = PhotoServer(photo_dir, tls=args.photos == "https") if served and photo_dir else None
    origin = None if server is None else server.origin
    decoder = CheckingDecoder() if args.takes == "checked" else InstantDecoder()
    spec = manifest().preprocessing
    # Only photos the decoder takes: one it refused would cost a whole CPU decode.
    photos = payloads(
        min(total, 64), args.payload_kb, args.jpegs, lambda p: decoder.takes(p, spec), args.camera
    )
    records = image_records(photos, photo_dir, origin)
    if source_kind == "memory":
        source: Any = ReplaySource(records, args.batch, args.batches)
    else:
        source = CountingSource(kafka_source(records, total, args), total)
    if sink_kind == "memory":
        sink: Any = CountingSink()
    else:
        from worker.adapters.kafka.output import OutputPublisher

        suffix = uuid.uuid4().hex[:8]
        TOPICS.extend((f"bench-tags-{suffix}", f"bench-dlq-{suffix}"))
        sink = OutputPublisher(args.bootstrap, TOPICS[-2], TOPICS[-1], "bench-loop")
    service = bench_service(
        worker_id="bench-loop",
        model=InstantModel(args.batch),
        gallery=InstantGallery(),
        source=source,
        sink=sink,
        photo_dir=photo_dir,
        batch=args.batch,
        batch_max_wait_ms=50,
        decode_threads=args.decode_threads,
        batch_decoder=decoder,
        http_origin=origin,
        keep_alive=args.keep_alive,
    )
    after: dict[int, tuple[str, float]] = {}

    def stop_when_done() -> None:
        if service.idle:  # everything committed: the CPU of the threads, while they still live
            after.update(thread_cpu())
            service.stop()

    source.on_empty = stop_when_done
    runner = threading.Thread(target=service.run, name="bench-loop")
    before, started = thread_cpu(), time.perf_counter()
    runner.start()
    runner.join()
    seconds = time.perf_counter() - (getattr(source, "first_records_at", None) or started)
    if server is not None:
        server.stop()
    if photo_dir is not None:
        shutil.rmtree(photo_dir)
        shutil.rmtree(photo_dir.with_name(photo_dir.name + "-tls"), ignore_errors=True)
    per_photo: dict[str, float] = {}
    for native_id, (group, cpu) in after.items():
        spent = cpu - before.get(native_id, (group, 0.0))[1]
        per_photo[group] = per_photo.get(group, 0.0) + spent / total * 1000
    return total / seconds, per_photo


def kafka_source(records: list[KafkaRecord], total: int, args: argparse.Namespace) -> Any:
    """A fresh topic holding ``total`` of the events, and the worker's consumer on it."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from worker.adapters.kafka.consumer import ImageConsumer

    topic = f"bench-images-{uuid.uuid4().hex[:8]}"
    TOPICS.append(topic)
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
    admin.create_topics([NewTopic(topic, 4, 1)])
    admin.close()
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap, max_request_size=40 * 2**20, linger_ms=5, batch_size=2**20
    )
    for i in range(total):
        record = records[i % len(records)]
        producer.send(topic, key=record.key, value=record.value, headers=list(record.headers))
    producer.flush()
    producer.close()
    return ImageConsumer(
        args.bootstrap, topic, f"bench-{topic}", "bench-loop", on_assignment=lambda held: None
    )


def delete_topics(bootstrap: str) -> None:
    """Delete the topics this run made, if any."""
    if not TOPICS:
        return
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([t for t in TOPICS if t in set(admin.list_topics())])
    finally:
        admin.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--payload-kb", type=int, default=64)
    parser.add_argument("--decode-threads", type=int, default=2)
    parser.add_argument(
        "--photos",
        choices=("inline", "file", "http", "https"),
        default="inline",
        help="photos inline in the events, or in files the events reference (file://, or "
        "http(s):// from bench/photo_server.py on this machine)",
    )
    parser.add_argument(
        "--jpegs",
        type=Path,
        help="a folder of real JPEGs to use instead of random payloads (e.g. "
        "../shared/data/photos-fullsize; --payload-kb is then ignored)",
    )
    parser.add_argument(
        "--camera",
        type=int,
        default=0,
        help="this many synthetic 12 MP JPEGs (about 1.4 MB) instead of random payloads",
    )
    parser.add_argument(
        "--takes",
        choices=("all", "checked"),
        default="all",
        help="the instant decoder takes every photo (all), or those the GPU decoder's header "
        "and structure checks accept (checked: their CPU in the decoding threads)",
    )
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=8,
        help="http(s) connections the worker keeps open for later fetches (0: one a photo)",
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("LANDMARK_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    )
    parser.add_argument(
        "--allocator",
        choices=("tuned", "system"),
        default="tuned",
        help="glibc's allocator as the worker tunes it (default), or left at its defaults",
    )
    parser.add_argument(
        "--runs",
        default="memory>memory,kafka>memory,memory>kafka,kafka>kafka",
        help="source>sink pairs, comma-separated (memory or kafka each)",
    )
    args = parser.parse_args(argv)
    from worker.adapters.allocator import tune_allocator
    from worker.observability.logs import configure_logging

    allocator = tune_allocator() if args.allocator == "tuned" else "system"

    configure_logging("json", "info", stream=open(os.devnull, "w"))  # noqa: SIM115 (as the worker logs; for the process)
    print(
        f"loop ceiling: batch {args.batch}, {args.batches} batches, {args.photos} photos of "
        f"{'real JPEGs' if args.jpegs or args.camera else f'{args.payload_kb} KB'}, "
        f"takes {args.takes}, "
        f"{args.decode_threads} decode threads, {os.cpu_count()} CPUs, "
        f"allocator {allocator}, keep-alive {args.keep_alive}; load average {os.getloadavg()[0]:.2f}"
    )
    groups = ("loop", "prepare", "decode", "publish", "kafka", "other")
    print()
    print("| source > sink | photos/s | " + " | ".join(f"{g} CPU ms" for g in groups) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in groups) + " |")
    try:
        for pair in args.runs.split(","):
            source_kind, sink_kind = pair.split(">")
            warm_up = argparse.Namespace(**{**vars(args), "batches": 2})
            run(source_kind, sink_kind, warm_up)
            rate, per_photo = run(source_kind, sink_kind, args)
            cells = " | ".join(f"{per_photo.get(g, 0.0):.3f}" for g in groups)
            print(f"| {source_kind} > {sink_kind} | {rate:,.0f} | {cells} |", flush=True)
    finally:
        delete_topics(args.bootstrap)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
