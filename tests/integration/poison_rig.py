"""One real worker on two partitions, raw producers, and a ledger of what every record got.

The poison-record suite and the fuzz run send records of their own making (any key, value,
headers, compression, partition) with valid photos around them, then read both output topics and
count, for every record sent, the outputs that answer it: tag events by image id, dead letters by
source partition and offset. Every record must get exactly one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from schemas.image_event import InlinePhoto, encode_image_event
from schemas.kafka_record import KafkaRecord
from tests.integration.worker_stack import (
    WorkerProcess,
    create_topics,
    delete_topics,
    read_outputs,
    shared_stack,
    worker_on_topics,
)

#: Large enough for any record the suite sends uncompressed (the broker takes 40 MiB batches).
_MAX_REQUEST_BYTES = 40 * 1024 * 1024


class RawHeaderName(str):
    """A header name whose bytes go on the wire as given, UTF-8 or not.

    kafka-python only accepts ``str`` header names and writes ``name.encode("utf-8")``; a
    subclass that answers ``encode`` with other bytes is how a careless (or hostile) producer
    gets a name that is not UTF-8 onto a topic: the broker does not check.
    """

    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


@dataclass(frozen=True)
class Sent:
    """A record on the images topic and what it should get.

    Attributes:
        partition: Where it went.
        offset: Its offset.
        image_id: The id its tag event would carry (``None``: it can only be dead-lettered).
        expect: ``"tag"``, a dead-letter reason, ``"dead"`` for any dead letter, or ``"any"``
            for exactly one output of either kind.
    """

    partition: int
    offset: int
    image_id: str | None
    expect: str


@dataclass
class Answers:
    """The outputs read back, indexed the two ways records are answered."""

    tags: list[dict[str, Any]]
    dead: list[dict[str, Any]]
    by_position: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)
    tags_by_id: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for letter in self.dead:
            position = (letter["source_partition"], letter["source_offset"])
            self.by_position.setdefault(position, []).append(letter)
        self.tags_by_id.update(tag["image_id"] for tag in self.tags)

    def count(self, sent: Sent) -> int:
        """Outputs answering ``sent``: its tag events and its dead letters."""
        tagged = self.tags_by_id[sent.image_id] if sent.image_id is not None else 0
        return tagged + len(self.by_position.get((sent.partition, sent.offset), []))

    def answered_all(self, sent: Sequence[Sent]) -> bool:
        """Whether every record in ``sent`` has at least one output."""
        return all(self.count(record) >= 1 for record in sent)

    def outcome(self, sent: Sent) -> str:
        """``"tag"``, the dead letter's reason, or a description of what went wrong."""
        letters = self.by_position.get((sent.partition, sent.offset), [])
        tagged = self.tags_by_id[sent.image_id] if sent.image_id is not None else 0
        if tagged and not letters:
            return "tag" if tagged == 1 else f"tag x{tagged}"
        if len(letters) == 1 and not tagged:
            return str(letters[0]["reason"])
        return f"{tagged} tags, dead letters {[d['reason'] for d in letters]}"


class PoisonRig:
    """A running worker on fresh topics, with a producer and valid photos to surround poison.

    Args:
        bootstrap: Kafka bootstrap servers.
        topics: Images, tags and dead-letter topics (two partitions each).
        worker: The worker consuming the images topic.
        photos: Real photos the worker can tag.
        reference_root: The worker's ``--reference-root``, if any.
        host: A :class:`HostileHost` the worker may fetch from (``host:port``), if any.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: tuple[str, str, str],
        worker: WorkerProcess,
        photos: Sequence[Path],
        reference_root: Path | None = None,
        host: str = "",
    ) -> None:
        self.bootstrap, self.topics, self.worker = bootstrap, topics, worker
        self.reference_root, self.host = reference_root, host
        self._photos = [p.read_bytes() for p in photos]
        self._sent = 0
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            max_request_size=_MAX_REQUEST_BYTES,
        )

    def close(self) -> None:
        self.producer.close(timeout=10)

    def photo(self, label: str) -> KafkaRecord:
        """A valid inline photo event with a fresh image id."""
        self._sent += 1
        return encode_image_event(
            InlinePhoto(
                image_id=f"{label}-{self._sent}-{uuid.uuid4().hex[:6]}",
                data=self._photos[self._sent % len(self._photos)],
                content_type="image/jpeg",
                published_at=datetime.now(UTC),
            )
        )

    def send(
        self,
        partition: int,
        record: KafkaRecord,
        expect: str,
        headers: Sequence[tuple[str, bytes]] | None = None,
        producer: KafkaProducer | None = None,
    ) -> Sent:
        """Send one record (in a batch of its own) and wait for the broker's acknowledgement.

        Args:
            partition: The images topic's partition.
            record: Key, value and headers to send (``headers`` replaces the record's).
            expect: What it should get (see :class:`Sent`).
            headers: Headers to send instead of the record's (names of any kind).
            producer: Another producer (compression, limits) instead of the rig's.
        """
        sending = producer if producer is not None else self.producer
        metadata = sending.send(
            self.topics[0],
            key=record.key,
            value=record.value,
            headers=list(record.headers if headers is None else headers),
            partition=partition,
        ).get(timeout=60)
        image_id = record.key.decode("utf-8", "replace") if record.key is not None else None
        return Sent(partition, metadata.offset, image_id, expect)

    def send_photo(self, partition: int, label: str) -> Sent:
        return self.send(partition, self.photo(label), "tag")

    def answers(self, sent: Sequence[Sent], timeout_s: float = 120.0) -> Answers:
        """Read both output topics until every record in ``sent`` has an answer (or time is up)."""
        tags_topic, dead_topic = self.topics[1], self.topics[2]

        def parsed(values: dict[str, list[bytes]]) -> Answers:
            return Answers(
                [json.loads(v) for v in values[tags_topic]],
                [json.loads(v) for v in values[dead_topic]],
            )

        values = read_outputs(
            self.bootstrap,
            [tags_topic, dead_topic],
            expected=10**9,
            timeout_s=timeout_s,
            until=lambda v: parsed(v).answered_all(sent),
        )
        return parsed(values)

    def check(self, sent: Sequence[Sent], timeout_s: float = 120.0) -> Answers:
        """Assert that every record got exactly the one output it should, and the worker is well.

        Returns:
            The outputs, for further checks.
        """
        answers = self.answers(sent, timeout_s)
        wrong = [
            (index, record.expect, outcome)
            for index, (record, outcome) in enumerate(
                zip(sent, map(answers.outcome, sent), strict=True)
            )
            if not _matches(record.expect, outcome) or answers.count(record) != 1
        ]
        assert not wrong, (
            f"{len(wrong)} of {len(sent)} records did not get the one output expected; "
            f"(index, expected, got), first 20: {wrong[:20]}"
        )
        self.assert_alive_and_ready()
        return answers

    def assert_alive_and_ready(self, timeout_s: float = 30.0) -> None:
        assert self.worker.process.poll() is None, f"worker exited:\n{self.worker.log()}"
        deadline = time.monotonic() + timeout_s
        while self.worker.get("/readyz")[0] != 200:
            assert time.monotonic() < deadline, f"worker not ready: {self.worker.get('/readyz')}"
            time.sleep(0.3)


def _matches(expect: str, outcome: str) -> bool:
    if expect == "any":
        return " " not in outcome
    if expect == "dead":
        return outcome != "tag" and " " not in outcome
    return outcome == expect


class HostileHost:
    """An HTTP host on 127.0.0.1 that misbehaves, by path; use as a context manager.

    ``/slow.jpg`` promises a photo, then sends one byte every ``every_s`` for ``lasting_s``;
    ``/short.jpg`` promises 1000 bytes and sends 10; ``/not-http.jpg`` answers with an SSH
    banner.

    Attributes:
        address: ``127.0.0.1:port`` (``http://`` + it for ``--reference-origins``).
        requested: Set once a request for ``/slow.jpg`` has come in.
    """

    def __init__(self, every_s: float = 0.5, lasting_s: float = 120.0) -> None:
        self.requested = threading.Event()
        self._closing = threading.Event()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with contextlib.suppress(OSError):
                    if self.path == "/not-http.jpg":
                        self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n")
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", "1000")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if self.path == "/short.jpg":
                        self.wfile.write(b"\xff\xd8\xff" + bytes(7))
                        return
                    host.requested.set()
                    ends = time.monotonic() + lasting_s
                    while time.monotonic() < ends and not host._closing.wait(every_s):
                        self.wfile.write(b"\xff")
                        self.wfile.flush()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileHost:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def running_poison_rig(
    bootstrap: str, landmarks_dir: Path, directory: Path, partitions: int = 2
) -> Iterator[PoisonRig]:
    """A worker on fresh topics, allowed a reference root (with a FIFO) and a hostile host."""
    stack = shared_stack(landmarks_dir)
    topics = create_topics(bootstrap, "poison", partitions=partitions)
    root = directory / "references"
    root.mkdir()
    os.mkfifo(root / "pipe.jpg")
    with HostileHost(every_s=0.5) as host:
        worker = worker_on_topics(
            stack,
            bootstrap,
            topics,
            "worker-poison",
            directory / "worker.log",
            [
                *("--reference-root", str(root)),
                *("--reference-origins", f"http://{host.address},http://127.0.0.1:28080"),
                *("--reference-timeout-s", "2"),
            ],
        )
        photos = sorted(landmarks_dir.glob("*/*.jpg"))[3::29][:8]
        rig = PoisonRig(bootstrap, topics, worker, photos, reference_root=root, host=host.address)
        try:
            worker.wait_ready()
            yield rig
        finally:
            rig.close()
            worker.kill()
            delete_topics(bootstrap, topics)
