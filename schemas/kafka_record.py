"""The broker-neutral Kafka record that the pure core sees."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KafkaRecord:
    """One Kafka record, independent of any client library.

    Attributes:
        key: The record key, or ``None``.
        value: The record value, or ``None`` (a tombstone).
        headers: Header (name, value) pairs in broker order; names may repeat.
        topic: The topic it was read from ("" for a record about to be produced).
        partition: The partition, or -1 when unknown.
        offset: The offset, or -1 when unknown.
        timestamp_ms: The broker or producer timestamp in ms since the epoch, if any.
        read_error: Set by a consumer when the client library could not parse the record (why,
            in words): key, value and headers are then unknown (``None`` and empty), only the
            topic, partition and offset are; the worker dead-letters it as ``unreadable_record``.
    """

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp_ms: int | None = None
    read_error: str | None = None

    def header_values(self, name: str) -> tuple[bytes, ...]:
        """Return every value of the header ``name``, in order.

        Args:
            name: The header name (case-sensitive, as Kafka treats it).

        Returns:
            The values; empty when the header is absent.
        """
        return tuple(value for header, value in self.headers if header == name)
