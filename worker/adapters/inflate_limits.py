"""A bound on how far kafka-python may inflate one compressed record batch.

kafka-python's decoders (``kafka.codec``) inflate a compressed batch whole, then copy it: a
0.75 MB gzip batch of 600 MiB of zeros took a worker from 1.0 to 2.2 GB before the record was
dead-lettered for its size. The fetch limits bound compressed bytes only. :func:`limit_inflation`
replaces the decoders the record-batch readers call with ones that stop at a bound and raise
:class:`InflatedTooLargeError` (a ``CorruptRecordError``), which the image consumer turns into an
``unreadable_record`` dead letter (:mod:`worker.adapters.unreadable`). Peak memory for one
refused batch is then about the bound, not the batch's inflated size.

The replacement is process-wide (kafka-python has no per-consumer hook); the worker process has
one consumer. Codecs whose library is missing stay refused by kafka-python itself
(``UnsupportedCodecError``, also an ``unreadable_record``).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

import kafka.codec
import kafka.record.default_records
import kafka.record.legacy_records
from kafka.errors import CorruptRecordError

#: Default bound: two of the largest photos a worker accepts (32 MiB each).
DEFAULT_MAX_INFLATED_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


class InflatedTooLargeError(CorruptRecordError):  # type: ignore[misc]
    """A compressed record batch inflates past the bound."""


def _too_large(codec: str, max_bytes: int) -> InflatedTooLargeError:
    return InflatedTooLargeError(
        f"the {codec}-compressed record batch inflates past {max_bytes} bytes; not read"
    )


def gzip_decode(payload: Any, max_bytes: int) -> bytes:
    """Inflate gzip members (kafka-python's ``gzip_decode``), at most ``max_bytes`` in all.

    Raises:
        InflatedTooLargeError: more than ``max_bytes`` would come out.
        CorruptRecordError: the data is not gzip or is cut short.
    """
    out = bytearray()
    data = bytes(payload)
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, max_bytes + 1 - len(out))
        except zlib.error as error:
            raise CorruptRecordError(f"gzip record batch: {error}") from None
        if len(out) > max_bytes:
            raise _too_large("gzip", max_bytes)
        if not inflater.eof:
            raise CorruptRecordError("gzip record batch is cut short")
        data = inflater.unused_data
    return bytes(out)


def lz4_decode(payload: bytes, max_bytes: int) -> bytes:
    """Inflate an LZ4 frame (kafka-python's ``lz4_decode``), at most ``max_bytes``."""
    import lz4.frame

    inflater = lz4.frame.LZ4FrameDecompressor()
    out: bytes = inflater.decompress(payload, max_length=max_bytes + 1)
    if len(out) > max_bytes:
        raise _too_large("lz4", max_bytes)
    return out


def zstd_decode(payload: bytes, max_bytes: int) -> bytes:
    """Inflate zstd frames (kafka-python's ``zstd_decode``), at most ``max_bytes`` in all."""
    import zstandard

    out = bytearray()
    reader = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(payload), read_across_frames=True
    )
    with reader:
        while chunk := reader.read(_CHUNK):
            out += chunk
            if len(out) > max_bytes:
                raise _too_large("zstd", max_bytes)
    return bytes(out)


def snappy_decode(payload: bytes, max_bytes: int) -> bytes:
    """Inflate snappy (raw or xerial-framed), refusing before it if the blocks say too much.

    Every snappy block starts with its inflated length, so the sum is checked first.
    """
    blocks = _snappy_blocks(payload)
    if sum(_snappy_length(block) for block in blocks) > max_bytes:
        raise _too_large("snappy", max_bytes)
    import snappy

    return b"".join(snappy.decompress(block) for block in blocks)


_XERIAL_MAGIC = b"\x82SNAPPY\x00"


def _snappy_blocks(payload: bytes) -> list[bytes]:
    """The raw snappy blocks: the payload itself, or each block of a xerial stream."""
    if not payload.startswith(_XERIAL_MAGIC) or len(payload) < 16:
        return [payload]
    blocks, cursor = [], 16
    while cursor < len(payload):
        if cursor + 4 > len(payload):
            raise CorruptRecordError("snappy record batch: cut short in a block's length")
        size = int.from_bytes(payload[cursor : cursor + 4], "big", signed=True)
        if size < 0 or cursor + 4 + size > len(payload):
            raise CorruptRecordError("snappy record batch: a block runs past the end")
        blocks.append(payload[cursor + 4 : cursor + 4 + size])
        cursor += 4 + size
    return blocks


def _snappy_length(block: bytes) -> int:
    """The inflated length a raw snappy block declares (its leading varint)."""
    length = 0
    for index, byte in enumerate(block[:5]):
        length |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return length
    raise CorruptRecordError("snappy record batch: no length at the start of a block")


def limit_inflation(max_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> None:
    """Make every kafka-python record-batch reader of this process inflate at most ``max_bytes``.

    Args:
        max_bytes: Most bytes one compressed batch may inflate to (calling again replaces it).
    """
    if max_bytes < 1:
        raise ValueError("max_bytes must be at least 1")
    decoders: dict[str, Callable[..., bytes]] = {
        "gzip_decode": partial(gzip_decode, max_bytes=max_bytes),
        "lz4_decode": partial(lz4_decode, max_bytes=max_bytes),
        "zstd_decode": partial(zstd_decode, max_bytes=max_bytes),
        "snappy_decode": partial(snappy_decode, max_bytes=max_bytes),
    }
    # The readers imported the decoders by name; kafka.codec's own lz4_decode_old_kafka calls
    # the module's lz4_decode.
    for module in (kafka.codec, kafka.record.default_records, kafka.record.legacy_records):
        for name, decoder in decoders.items():
            if hasattr(module, name):
                setattr(module, name, decoder)
