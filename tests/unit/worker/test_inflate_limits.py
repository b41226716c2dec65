"""kafka-python's record readers inflate a compressed batch only up to the worker's bound."""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import Iterator

import pytest
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from worker.adapters.inflate_limits import (
    DEFAULT_MAX_INFLATED_BYTES,
    InflatedTooLargeError,
    gzip_decode,
    limit_inflation,
    snappy_decode,
)

MIB = 1024 * 1024


@pytest.fixture
def one_mib_limit() -> Iterator[None]:
    limit_inflation(MIB)
    yield
    limit_inflation(DEFAULT_MAX_INFLATED_BYTES)


def gzip_batch(value: bytes) -> bytes:
    """A record batch as the broker hands it out: one record, gzip-compressed."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=DefaultRecordBatchBuilder.CODEC_GZIP,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=2**31 - 1,
    )
    builder.append(0, timestamp=None, key=b"bomb", value=value, headers=[])
    return bytes(builder.build())


def read_values(batch: bytes) -> list[bytes]:
    return [record.value for record in MemoryRecords(batch).next_batch()]


def test_a_batch_within_the_limit_is_read(one_mib_limit: None) -> None:
    assert read_values(gzip_batch(b"photo" * 1000)) == [b"photo" * 1000]


def test_a_batch_inflating_past_the_limit_is_refused(one_mib_limit: None) -> None:
    with pytest.raises(InflatedTooLargeError, match="inflates past"):
        read_values(gzip_batch(bytes(2 * MIB)))


def test_refusing_a_bomb_allocates_about_the_limit_not_the_bomb(one_mib_limit: None) -> None:
    """64 MiB of zeros compress to 64 KiB; refusing them allocates little more than the limit."""
    batch = gzip_batch(bytes(64 * MIB))
    tracemalloc.start()
    try:
        with pytest.raises(InflatedTooLargeError):
            read_values(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB


def test_the_refusal_is_a_corrupt_record_error_the_consumer_turns_into_a_dead_letter() -> None:
    assert issubclass(InflatedTooLargeError, CorruptRecordError)


def test_gzip_members_are_all_inflated() -> None:
    payload = gzip.compress(b"first ") + gzip.compress(b"second")
    assert gzip_decode(payload, max_bytes=100) == b"first second"


def test_gzip_cut_short_is_corrupt() -> None:
    with pytest.raises(CorruptRecordError, match="cut short"):
        gzip_decode(gzip.compress(b"x" * 1000)[:-12], max_bytes=MIB)


def test_gzip_garbage_is_corrupt() -> None:
    with pytest.raises(CorruptRecordError):
        gzip_decode(b"not gzip at all", max_bytes=MIB)


def test_snappy_is_refused_from_the_lengths_its_blocks_declare() -> None:
    """No snappy library needed: the 100 MiB a block declares is refused before inflating."""
    varint = bytes(  # 100 MiB as snappy writes a block's length: 7 bits a byte, low first
        [(100 * MIB >> shift & 0x7F) | (0x80 if shift < 21 else 0) for shift in (0, 7, 14, 21)]
    )
    xerial = b"\x82SNAPPY\x00" + bytes(8) + (len(varint) + 3).to_bytes(4, "big") + varint + b"abc"
    with pytest.raises(InflatedTooLargeError):
        snappy_decode(xerial, max_bytes=MIB)
