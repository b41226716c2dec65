"""The worker end to end: real Kafka, Milvus Lite, a small real model, worker processes.

Each test runs against two ``landmark-worker`` processes sharing one consumer group on topics of
their own. The tests that only publish and read share one such pair (each looks only at the
photos it published); the tests that stop workers (SIGKILL one, SIGTERM both) start a pair of
their own, so that no test depends on another having run, or not, before it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition

from configuration.kafka import CONSUMER_SIZE_LIMITS
from tests.integration.worker_stack import (
    Stack,
    WorkerProcess,
    create_topics,
    delete_topics,
    publish,
    read_outputs,
    shared_stack,
)

pytestmark = pytest.mark.integration


class Pair:
    def __init__(
        self,
        stack: Stack,
        bootstrap: str,
        topics: tuple[str, str, str],
        group: str,
        workers: list[WorkerProcess],
    ) -> None:
        self.stack, self.bootstrap, self.topics, self.group = stack, bootstrap, topics, group
        self.workers = workers

    @property
    def images(self) -> str:
        return self.topics[0]

    def outputs(
        self, ids: set[str | None], timeout_s: float = 90.0
    ) -> tuple[list[dict], list[dict]]:
        """Tag events and dead letters so far, once every one of ``ids`` has been answered.

        Other tests' outputs on the same topics are read too; callers look at their own ids.
        """

        def answered(values: dict[str, list[bytes]]) -> bool:
            seen = {json.loads(v)["image_id"] for v in values[self.topics[1]]} | {
                json.loads(v)["original_key"] for v in values[self.topics[2]]
            }
            return ids <= seen

        values = read_outputs(self.bootstrap, self.topics[1:], 10**9, timeout_s, until=answered)
        return (
            [json.loads(v) for v in values[self.topics[1]]],
            [json.loads(v) for v in values[self.topics[2]]],
        )


@contextmanager
def running_pair(
    kafka_bootstrap: str,
    landmarks_dir: Path,
    shared_data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    """Two workers in one group on fresh topics, each holding some partitions; killed after."""
    stack = shared_stack(landmarks_dir)
    topics = create_topics(kafka_bootstrap, "worker-pipeline")
    logs = tmp_path_factory.mktemp("worker-logs")
    group = f"{topics[0]}-group"
    workers = [
        WorkerProcess(
            stack,
            bootstrap=kafka_bootstrap,
            images_topic=topics[0],
            tags_topic=topics[1],
            dead_letter_topic=topics[2],
            group_id=group,
            worker_id=f"worker-{name}",
            log_path=logs / f"{name}.log",
            reference_root=shared_data_dir,
        )
        for name in ("a", "b")
    ]
    try:
        for worker in workers:
            worker.wait_ready()
        _wait_for_split(workers)
        yield Pair(stack, kafka_bootstrap, topics, group, workers)
    finally:
        for worker in workers:
            worker.kill()
        delete_topics(kafka_bootstrap, topics)


@pytest.fixture(scope="module")
def pair(
    kafka_bootstrap: str,
    landmarks_dir: Path,
    shared_data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    """A pair for the tests that leave both workers running."""
    with running_pair(kafka_bootstrap, landmarks_dir, shared_data_dir, tmp_path_factory) as pair:
        yield pair


@pytest.fixture
def own_pair(
    kafka_bootstrap: str,
    landmarks_dir: Path,
    shared_data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    """A pair for one test that stops workers."""
    with running_pair(kafka_bootstrap, landmarks_dir, shared_data_dir, tmp_path_factory) as pair:
        yield pair


def _wait_for_split(workers: list[WorkerProcess], timeout_s: float = 60.0) -> None:
    """Wait until the group has rebalanced so that every worker holds some partitions."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = [json.loads(w.get("/readyz")[1])["partitions"] for w in workers]
        if all(held) and sum(map(len, held)) == 4:
            return
        time.sleep(0.5)
    raise AssertionError(f"partitions never split between the workers: {held}")


def _photos(landmarks_dir: Path, skip: int, count: int) -> list[Path]:
    every = sorted(landmarks_dir.glob("*/*.jpg"))
    return every[skip::7][:count]


def test_every_photo_gets_exactly_one_tag_or_dead_letter(
    pair: Pair, landmarks_dir: Path, shared_data_dir: Path, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a photo" * 50)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(sorted(landmarks_dir.glob("*/*.jpg"))[0].read_bytes()[:700])
    inline = [
        *_photos(landmarks_dir, 0, 16),
        *sorted((shared_data_dir / "odd-formats").iterdir()),
        garbage,
        truncated,
    ]
    fullsize = sorted((shared_data_dir / "photos-fullsize").iterdir())[:2]
    published = publish(pair.bootstrap, pair.images, inline, tmp_path / "inline.jsonl")
    published += publish(
        pair.bootstrap, pair.images, fullsize, tmp_path / "big.jsonl", "--as", "reference"
    )
    outside_root = publish(
        pair.bootstrap,
        pair.images,
        [garbage],
        tmp_path / "outside.jsonl",
        "--as",
        "reference",
        "--id-scheme",
        "path",
    )
    producer = KafkaProducer(bootstrap_servers=pair.bootstrap, acks="all")
    producer.send(pair.images, value=b"no key").get(timeout=30)
    producer.close()
    wanted = [p["image_id"] for p in published + outside_root] + [None]

    tags, dead = pair.outputs(ids=set(wanted))

    answered = [t["image_id"] for t in tags] + [d["original_key"] for d in dead]
    assert Counter(key for key in answered if key in wanted) == Counter(wanted)
    reasons = {d["original_key"]: d["reason"] for d in dead}
    by_path = {Path(p["path"]).name: p["image_id"] for p in published}
    assert reasons[by_path["garbage.jpg"]] in ("unsupported_format", "undecodable_image")
    assert reasons[by_path["truncated.jpg"]] == "undecodable_image"
    assert reasons[outside_root[0]["image_id"]] == "bad_reference"
    assert reasons[None] == "schema_violation"
    assert {t["model_version"] for t in tags} == {pair.stack.model_version}
    assert {t["gallery_version"] for t in tags} == {pair.stack.gallery_version}
    # The camera-size photos were fetched by workers whose allocator keeps them in the heap.
    for worker in pair.workers:
        settings = [
            json.loads(line)
            for line in worker.log_path.read_text().splitlines()
            if '"allocator settings"' in line
        ]
        assert [line["outcome"] for line in settings] == ["tuned"]


def test_two_workers_share_the_partitions(pair: Pair, landmarks_dir: Path, tmp_path: Path) -> None:
    published = publish(
        pair.bootstrap, pair.images, _photos(landmarks_dir, 1, 24), tmp_path / "ids.jsonl"
    )
    ids = {p["image_id"] for p in published}
    tags, _ = pair.outputs(ids=ids, timeout_s=60)
    workers = {t["worker_id"] for t in tags if t["image_id"] in ids}
    assert workers == {"worker-a", "worker-b"}


def test_sigkill_of_one_worker_mid_stream_loses_nothing(
    own_pair: Pair, landmarks_dir: Path, tmp_path: Path
) -> None:
    victim, survivor = own_pair.workers
    before = survivor.metric("landmark_worker_images_total")
    victim_before = victim.metric("landmark_worker_images_total")
    first = publish(
        own_pair.bootstrap, own_pair.images, _photos(landmarks_dir, 2, 60), tmp_path / "first.jsonl"
    )
    deadline = time.monotonic() + 60
    while (
        victim.metric("landmark_worker_images_total") == victim_before
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    victim.kill()  # SIGKILL while the rest of the first wave is still being read
    second = publish(
        own_pair.bootstrap,
        own_pair.images,
        _photos(landmarks_dir, 3, 30),
        tmp_path / "second.jsonl",
    )
    ids = {p["image_id"] for p in first + second}

    tags, dead = own_pair.outputs(ids=ids, timeout_s=90)
    seen = {t["image_id"] for t in tags} | {d["original_key"] for d in dead}

    assert ids - seen == set()
    assert survivor.metric("landmark_worker_images_total") > before


def test_sigterm_finishes_the_batch_commits_and_leaves_the_group(
    own_pair: Pair, landmarks_dir: Path, tmp_path: Path
) -> None:
    """Stopped mid-stream: exit 0, no member left, and every committed record has an output."""
    running = own_pair.workers
    before = sum(w.metric("landmark_worker_images_total") for w in running)
    publish(
        own_pair.bootstrap, own_pair.images, _photos(landmarks_dir, 4, 40), tmp_path / "ids.jsonl"
    )
    deadline = time.monotonic() + 60
    while (
        sum(w.metric("landmark_worker_images_total") for w in running) == before
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    codes = [w.terminate(timeout_s=60) for w in running]

    admin = KafkaAdminClient(bootstrap_servers=own_pair.bootstrap)
    try:
        (group,) = admin.describe_consumer_groups([own_pair.group])
        committed = admin.list_consumer_group_offsets(own_pair.group)
    finally:
        admin.close()
    consumed_keys = _keys_below(
        own_pair.bootstrap, {tp: meta.offset for tp, meta in committed.items()}
    )
    tags, dead = own_pair.outputs(ids={k for k in consumed_keys if k is not None}, timeout_s=30)
    answered = {t["image_id"] for t in tags} | {d["original_key"] for d in dead}

    assert codes == [0] * len(running)
    assert group.members == []
    assert consumed_keys - answered == set()
    assert all("worker stopped" in w.log() for w in running)


def _keys_below(bootstrap: str, offsets: dict[TopicPartition, int]) -> set[str | None]:
    """Keys of the records before the given offsets."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **CONSUMER_SIZE_LIMITS
    )
    try:
        consumer.assign(list(offsets))
        consumer.seek_to_beginning(*offsets)
        keys: set[str | None] = set()
        remaining = {tp for tp, end in offsets.items() if end > 0}
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset < offsets[tp]:
                        keys.add(record.key.decode() if record.key is not None else None)
                    if record.offset >= offsets[tp] - 1:
                        remaining.discard(tp)
        return keys
    finally:
        consumer.close()
