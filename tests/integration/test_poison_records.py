"""Poison records: each kind sent between valid photos on two partitions of one real worker.

Every record must get exactly one output (a tag event for each valid photo, one dead letter for
the poison), and the worker must be alive and ready afterwards. The kinds are the ones of issue
14: records the Kafka client cannot parse, records whose dead letter would be too big,
references to slow hosts and FIFOs, photos with no picture, bad ports, gzip bombs, large photos.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer
from PIL import Image

from schemas.image_event import InlinePhoto, PhotoReference, encode_image_event
from schemas.kafka_record import KafkaRecord
from tests.integration.poison_rig import PoisonRig, RawHeaderName, Sent

pytestmark = pytest.mark.integration

PARTITIONS = (0, 1)
MIB = 1024 * 1024


@pytest.fixture
def rig(poison_rig: PoisonRig) -> PoisonRig:
    """The worker of ``tests/integration/conftest.py`` (shared with the fuzz run)."""
    return poison_rig


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


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def _claims_6000_square(photo: bytes) -> bytes:
    """A small JPEG whose frame header claims 6000 x 6000: its scan stops 36 million pixels short."""
    frame = photo.index(b"\xff\xc0")
    size = (6000).to_bytes(2, "big") * 2
    return photo[: frame + 5] + size + photo[frame + 9 :]


def _inline(
    rig: PoisonRig, label: str, data: bytes, content_type: str = "image/jpeg"
) -> KafkaRecord:
    return encode_image_event(
        InlinePhoto(
            image_id=f"{label}-{os.urandom(3).hex()}",
            data=data,
            content_type=content_type,
            published_at=datetime.now(UTC),
        )
    )


def _reference(label: str, uri: str) -> KafkaRecord:
    return encode_image_event(PhotoReference(image_id=f"{label}-{os.urandom(3).hex()}", uri=uri))


def _root(rig: PoisonRig) -> Path:
    assert rig.reference_root is not None
    return rig.reference_root


#: Kind of poison → (the record, given the rig; the reason of its one dead letter, or "tag").
KINDS: dict[str, tuple[Callable[[PoisonRig], KafkaRecord], str]] = {
    "5 MiB header and no schema-version (#2)": (
        lambda rig: KafkaRecord(
            key=b"big-header-" + os.urandom(3).hex().encode(),
            value=rig.photo("x").value,
            headers=(("content-type", b"image/jpeg"), ("x-padding", b"p" * (5 * MIB))),
        ),
        "schema_violation",
    ),
    "slow reference host (#3)": (
        lambda rig: _reference("slow", f"http://{rig.host}/slow.jpg"),
        "reference_unreachable",
    ),
    "FIFO under the reference root (#4)": (
        lambda rig: _reference("fifo", (_root(rig) / "pipe.jpg").as_uri()),
        "bad_reference",
    ),
    "645-byte JPEG claiming 6000 x 6000 (#6)": (
        lambda rig: _inline(rig, "grey-fill", _claims_6000_square(_jpeg(_noise(64)))),
        "undecodable_image",
    ),
    "blank picture (#6)": (
        lambda rig: _inline(rig, "blank", _jpeg(np.full((200, 300, 3), 90, np.uint8))),
        "blank_image",
    ),
    "port out of range (#7)": (
        lambda rig: _reference("port", "http://127.0.0.1:99999/a.jpg"),
        "bad_reference",
    ),
    "two ports (#7)": (
        lambda rig: _reference("ports", "http://127.0.0.1:28080:80/a.jpg"),
        "bad_reference",
    ),
    "host that does not speak HTTP (#7)": (
        lambda rig: _reference("not-http", f"http://{rig.host}/not-http.jpg"),
        "reference_unreachable",
    ),
    "body shorter than its Content-Length (#7)": (
        lambda rig: _reference("short", f"http://{rig.host}/short.jpg"),
        "reference_unreachable",
    ),
    "5 MiB inline photo (#9)": (
        lambda rig: _inline(rig, "big-photo", _big_png(), "image/png"),
        "tag",
    ),
}


def _noise(side: int) -> np.ndarray:
    return np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _big_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_noise(1400)).save(buffer, "PNG", compress_level=1)
    assert len(buffer.getvalue()) > 5 * MIB
    return buffer.getvalue()


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_output_per_record_around_a_poison_record(rig: PoisonRig, kind: str) -> None:
    make, expect = KINDS[kind]

    sent = _between_photos(rig, kind.split()[0], lambda p: rig.send(p, make(rig), expect))

    rig.check(sent)
