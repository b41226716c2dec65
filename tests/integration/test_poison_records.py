"""Poison records: each kind sent between valid photos on two partitions of one real worker.

Every record must get exactly one output (a tag event for each valid photo, one dead letter for
the poison), and the worker must be alive and ready afterwards. The kinds are the ones of issue
14: records the Kafka client cannot parse, records whose dead letter would be too big,
references to slow hosts and FIFOs, photos with no picture, bad ports, gzip bombs, large photos.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from schemas.kafka_record import KafkaRecord
from tests.integration.poison_rig import PoisonRig, RawHeaderName, Sent
from tests.integration.worker_stack import (
    create_topics,
    delete_topics,
    shared_stack,
    worker_on_topics,
)

pytestmark = pytest.mark.integration

PARTITIONS = (0, 1)
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def rig(
    kafka_bootstrap: str, landmarks_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PoisonRig]:
    stack = shared_stack(landmarks_dir)
    topics = create_topics(kafka_bootstrap, "poison", partitions=len(PARTITIONS))
    directory = tmp_path_factory.mktemp("poison")
    worker = worker_on_topics(
        stack, kafka_bootstrap, topics, "worker-poison", directory / "worker.log"
    )
    photos = sorted(landmarks_dir.glob("*/*.jpg"))[3::29][:8]
    rig = PoisonRig(kafka_bootstrap, topics, worker, photos)
    try:
        worker.wait_ready()
        yield rig
    finally:
        rig.close()
        worker.kill()
        delete_topics(kafka_bootstrap, topics)


def _between_photos(rig: PoisonRig, label: str, send_poison: object) -> list[Sent]:
    """A valid photo, the poison, a valid photo, on each partition."""
    sent: list[Sent] = []
    for partition in PARTITIONS:
        sent.append(rig.send_photo(partition, f"{label}-before"))
        sent.append(send_poison(partition))  # type: ignore[operator]
        sent.append(rig.send_photo(partition, f"{label}-after"))
    return sent


def test_a_header_name_that_is_not_utf8_is_one_dead_letter(rig: PoisonRig) -> None:
    """kafka-python cannot parse the record; it crashed the worker on every restart (#1)."""

    def poison(partition: int) -> Sent:
        record = rig.photo("bad-header")
        headers = [*record.headers, (RawHeaderName(b"\xff\xfe-name"), b"value")]
        return rig.send(partition, record, "unreadable_record", headers=headers)

    sent = _between_photos(rig, "header", poison)

    answers = rig.check(sent)
    (letter,) = answers.by_position[(sent[1].partition, sent[1].offset)]
    assert letter["original_key"] is None and "UnicodeDecodeError" in letter["message"]


def test_records_after_an_unreadable_one_in_its_batch_are_dead_letters_once_each(
    rig: PoisonRig,
) -> None:
    """The client parses a batch from its start: what follows the bad record there is lost to it.

    Only records of the same producer request share a batch, so photos from other producers are
    never lost this way.
    """
    batching = KafkaProducer(
        bootstrap_servers=rig.bootstrap, acks="all", linger_ms=500, batch_size=4 * 1024 * 1024
    )
    try:
        records = [rig.photo("batch-first"), rig.photo("batch-bad"), rig.photo("batch-last")]
        bad_headers = [*records[1].headers, (RawHeaderName(b"\xc3\x28"), b"")]
        futures = [
            batching.send(
                rig.topics[0],
                key=record.key,
                value=record.value,
                headers=list(bad_headers if record is records[1] else record.headers),
                partition=0,
            )
            for record in records
        ]
        batching.flush(timeout=60)
        offsets = [future.get(timeout=60).offset for future in futures]
    finally:
        batching.close(timeout=10)
    expected = ("tag", "unreadable_record", "unreadable_record")
    sent = [
        Sent(0, offset, record.key.decode() if record.key else None, expect)
        for offset, record, expect in zip(offsets, records, expected, strict=True)
    ]
    sent.append(rig.send_photo(0, "batch-after"))

    rig.check(sent)


def _peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def test_a_gzip_bomb_is_one_dead_letter_and_does_not_grow_the_worker(rig: PoisonRig) -> None:
    """600 MiB of zeros compress to 0.6 MB; inflating them took a worker from 1.0 to 2.2 GB (#8)."""
    bombing = KafkaProducer(
        bootstrap_servers=rig.bootstrap,
        acks="all",
        compression_type="gzip",
        max_request_size=700 * MIB,
    )
    peak_before = _peak_rss_bytes(rig.worker.process.pid)
    try:

        def poison(partition: int) -> Sent:
            photo = rig.photo("gzip-bomb")
            bomb = KafkaRecord(key=photo.key, value=bytes(600 * MIB), headers=photo.headers)
            return rig.send(partition, bomb, "unreadable_record", producer=bombing)

        sent = _between_photos(rig, "gzip", poison)
    finally:
        bombing.close(timeout=10)

    rig.answers(sent)
    grown = _peak_rss_bytes(rig.worker.process.pid) - peak_before
    assert grown < 256 * MIB, f"the worker's peak memory grew by {grown / MIB:.0f} MiB"
    answers = rig.check(sent)
    assert "inflates past" in answers.by_position[(sent[1].partition, sent[1].offset)][0]["message"]
