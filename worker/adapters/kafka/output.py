"""The tag-event and dead-letter publisher: returns once the broker acknowledged every output."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NoBrokersAvailable

from configuration.kafka import connection_options
from schemas.dead_letter import DeadLetter
from schemas.tag_event import TagEvent

_OUTAGE_ERRORS = (KafkaTimeoutError, NoBrokersAvailable, KafkaConnectionError, TimeoutError)


def looks_like_outage(error: BaseException) -> bool:
    """Whether a failed publish looks like the broker being away rather than a bad output.

    Looks at the error and what caused it (``PublishError`` wraps kafka-python's error).
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, _OUTAGE_ERRORS):
            return True
        if isinstance(seen, KafkaError) and getattr(seen, "retriable", False):
            return True
        seen = seen.__cause__
    return False


def producer_options(timeout_s: float) -> dict[str, Any]:
    """The producer settings of every output producer: acknowledged by all in-sync replicas,
    and no wait on the broker longer than ``timeout_s``."""
    return {
        "acks": "all",
        "linger_ms": 5,
        "max_block_ms": int(timeout_s * 1000),
        "request_timeout_ms": int(min(timeout_s, 30.0) * 1000),
        "delivery_timeout_ms": int(timeout_s * 1000) + 1000,
        "max_request_size": 4 * 1024 * 1024,
    }


def send_and_wait(
    producer: KafkaProducer,
    topics: tuple[str, str],
    tag_events: Sequence[TagEvent],
    dead_letters: Sequence[DeadLetter],
    timeout_s: float,
) -> None:
    """Send the tag events and dead letters to ``topics`` (tags, dead letters) and wait until
    the broker acknowledged all of them.

    Raises:
        kafka.errors.KafkaError: some output was not acknowledged within ``timeout_s``.
    """
    tags_topic, dead_letter_topic = topics
    outputs: list[tuple[str, TagEvent | DeadLetter]] = [(tags_topic, e) for e in tag_events]
    outputs += [(dead_letter_topic, d) for d in dead_letters]
    deadline = time.monotonic() + timeout_s
    futures = []
    for topic, output in outputs:
        record = output.to_record()
        futures.append(
            producer.send(topic, value=record.value, key=record.key, headers=list(record.headers))
        )
    producer.flush(timeout=max(0.0, deadline - time.monotonic()))
    for future in futures:
        future.get(timeout=max(0.001, deadline - time.monotonic()))


class PublishError(Exception):
    """The broker did not acknowledge every output of a batch in time."""


class OutputPublisher:
    """Publishes tag events and dead letters, and waits until the broker has acknowledged them.

    Args:
        connection: Kafka bootstrap servers (plaintext), or the client options of the Kafka
            connection settings (:meth:`configuration.kafka.KafkaConnection.kafka_client_options`:
            TLS, SASL).
        tags_topic: Where tag events go (keyed by image id).
        dead_letter_topic: Where dead letters go (keyed like the original record).
        client_id: This worker's id.
        timeout_s: How long :meth:`publish` waits for acknowledgements.
    """

    def __init__(
        self,
        connection: str | Mapping[str, Any],
        tags_topic: str,
        dead_letter_topic: str,
        client_id: str,
        timeout_s: float = 30.0,
    ) -> None:
        self._topics = (tags_topic, dead_letter_topic)
        self._timeout_s = timeout_s
        self._producer = KafkaProducer(
            **connection_options(connection),
            client_id=client_id,
            **producer_options(timeout_s),
        )

    def publish(self, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]) -> None:
        """Send every output and wait until the broker has acknowledged all of them.

        Raises:
            PublishError: some output was not acknowledged within the timeout.
        """
        try:
            send_and_wait(self._producer, self._topics, tag_events, dead_letters, self._timeout_s)
        except KafkaError as error:
            count = len(tag_events) + len(dead_letters)
            raise PublishError(f"{count} outputs not acknowledged: {error!r}") from error

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending and close."""
        self._producer.close(timeout=timeout_s)
