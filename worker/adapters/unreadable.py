"""Records kafka-python cannot parse: find where the parse stopped, stand in for the record, move on.

kafka-python raises from ``poll()`` when a record batch cannot be read (a header name that is not
UTF-8, a failed CRC, a codec it lacks, a batch that inflates past its bound); polling again
raises again, so one such record would stop the partition, and the worker, for good. The client
keeps the failing partition's records in ``_fetcher._next_partition_records`` (kafka-python
2.3): where its parse stopped (``next_fetch_offset``) is the offset of the record it could not
read, or, when the consumer had already sought past that record, an earlier offset of the same
record batch, which the client must parse from its start. Either way the record at
``max(stopped, position)`` cannot be read: it becomes a stand-in :class:`KafkaRecord` carrying
only its position and the error (dead-lettered as ``unreadable_record``) and the consumer seeks
one past it. Records after a bad one in the same batch (written by the same producer, in the
same request) are therefore dead-lettered one by one too, each with the offset the parse
stopped at.
"""

from __future__ import annotations

from typing import Any

from kafka.errors import CorruptRecordError, UnsupportedCodecError
from kafka.structs import TopicPartition

from schemas.kafka_record import KafkaRecord

#: Errors from ``poll()`` that mean "this partition's next record cannot be parsed".
UNREADABLE_ERRORS: tuple[type[Exception], ...] = (CorruptRecordError, UnsupportedCodecError)


def unreadable_stand_in(consumer: Any, error: Exception) -> KafkaRecord | None:
    """Seek the consumer past the record it cannot parse and return a stand-in for that record.

    Args:
        consumer: The ``kafka.KafkaConsumer`` whose ``poll()`` raised ``error``.
        error: One of :data:`UNREADABLE_ERRORS`.

    Returns:
        The stand-in (no key, value or headers; ``read_error`` says why), or ``None`` when the
        client does not say which partition failed (then nothing was sought).
    """
    fetcher = getattr(consumer, "_fetcher", None)
    failing = getattr(fetcher, "_next_partition_records", None)
    partition: TopicPartition | None = getattr(failing, "topic_partition", None)
    stopped = getattr(failing, "next_fetch_offset", None)
    if partition is None or not isinstance(stopped, int):
        return None
    if partition not in consumer.assignment():
        return None
    position = consumer.position(partition, timeout_ms=0)
    offset = max(stopped, position if isinstance(position, int) else -1)
    consumer.seek(partition, offset + 1)
    what = f"{type(error).__name__}: {error}"
    if offset == stopped:
        message = f"the Kafka client cannot read this record: {what}"
    else:
        message = (
            f"the Kafka client cannot read this record's batch past offset {stopped}, "
            f"an earlier record of the same batch: {what}"
        )
    return KafkaRecord(
        key=None,
        value=None,
        topic=partition.topic,
        partition=partition.partition,
        offset=offset,
        read_error=message,
    )
