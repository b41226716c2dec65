"""Transactional producers, one per input partition: outputs and offsets committed together.

Exactly-once mode (``--delivery exactly-once``) publishes the outputs of each input partition's
share of a batch, and the group's offset for that partition, in one Kafka transaction of a
producer whose transactional id belongs to that partition (``transactional_id``). Whoever holds
the partition holds the id: a worker that is given the partition initialises the id's producer,
which fences every earlier producer of it (a previous incarnation of the same worker, or a
worker the partition moved away from) and ends the transaction that producer left open, before
the worker reads the partition's committed offset. kafka-python 2.3 sends offsets to a
transaction with ``TxnOffsetCommit`` v2 (no group generation: KIP-447's fencing of zombies by
generation is not implemented), so a transactional id per *worker* could not stop a worker the
partition moved away from; one per *partition* (Kafka Streams' first exactly-once design) does.

kafka-python waits without limit for a transaction's ``AddOffsetsToTxn``/``TxnOffsetCommit`` and
``EndTxn`` answers; :class:`PartitionProducer` waits on the same request results with a deadline
(``_transaction_manager`` and ``_sender`` are kafka-python 2.3's own, the objects its public
``send_offsets_to_transaction``/``commit_transaction``/``abort_transaction`` use). A commit whose
answer does not come in time has an unknown outcome: the producer is then closed, and the
partition's next producer learns the outcome when it is initialised (the broker completes or
aborts the transaction before it answers).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from kafka import KafkaProducer
from kafka.errors import (
    InvalidProducerEpochError,
    KafkaError,
    KafkaTimeoutError,
    ProducerFencedError,
    TransactionalIdAuthorizationFailedError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from configuration.kafka import connection_options
from schemas.dead_letter import DeadLetter
from schemas.tag_event import TagEvent
from worker.adapters.kafka.output import looks_like_outage, producer_options, send_and_wait
from worker.ports import Partition, TransactionFailed

log = structlog.get_logger("landmark.worker")

RETRY_BACKOFF_MS = 5

#: Errors after which a producer may not be used again: another producer holds its id now.
FENCING_ERRORS = (ProducerFencedError, InvalidProducerEpochError)


def transactional_id(group_id: str, partition: Partition) -> str:
    """The transactional id of the producer that publishes ``partition``'s outputs."""
    topic, number = partition
    return f"landmark-tagger.{group_id}.{topic}.{number}"


def is_fencing(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says another producer holds the transactional id.

    kafka-python reports some fencing answers wrapped in a plain ``KafkaError`` whose text names
    the error (``Unexpected error in TxnOffsetCommitResponse: ProducerFencedError``).
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, FENCING_ERRORS):
            return True
        if isinstance(seen, KafkaError) and any(
            name in str(seen) for name in ("ProducerFenced", "InvalidProducerEpoch")
        ):
            return True
        seen = seen.__cause__
    return False


class PartitionProducer:
    """The transactional producer of one input partition.

    Args:
        connection: Kafka bootstrap servers, or the connection settings' client options.
        partition: The input partition whose outputs it publishes.
        group_id: The workers' consumer group (its offsets are committed in the transactions).
        tags_topic: Where tag events go.
        dead_letter_topic: Where dead letters go.
        client_id: This worker's id.
        timeout_s: Longest wait for the broker in each step (initialising, acknowledging the
            outputs, adding the offsets, committing).
        transaction_timeout_ms: After this long the broker aborts a transaction left open.

    Raises:
        KafkaError: the producer could not be initialised (``init_transactions``): the broker
            is away or refuses the transactional id.
    """

    def __init__(
        self,
        connection: str | Mapping[str, Any],
        partition: Partition,
        *,
        group_id: str,
        tags_topic: str,
        dead_letter_topic: str,
        client_id: str,
        timeout_s: float,
        transaction_timeout_ms: int,
    ) -> None:
        self.partition = partition
        self._group_id = group_id
        self._topics = (tags_topic, dead_letter_topic)
        self._timeout_s = timeout_s
        self._closed = False
        self._producer = KafkaProducer(
            **connection_options(connection),
            client_id=f"{client_id}-txn-{partition[1]}",
            transactional_id=transactional_id(group_id, partition),
            transaction_timeout_ms=transaction_timeout_ms,
            **producer_options(timeout_s),
            # The first AddPartitionsToTxn after a commit is often answered
            # CONCURRENT_TRANSACTIONS (the broker is still writing the last commit's markers);
            # kafka-python waits retry_backoff_ms (100 ms by default) before asking again:
            # 54 ms a transaction on average here, 6 ms with 5 ms (9 ms with 10 ms).
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )
        try:
            # Fences earlier producers of this id and ends the transaction one left open
            # (aborted; or completed, when its commit had begun) before it returns.
            self._producer.init_transactions()
        except Exception:
            self.close(0.0)
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    def commit(
        self,
        next_offset: int,
        tag_events: Sequence[TagEvent],
        dead_letters: Sequence[DeadLetter],
    ) -> None:
        """Publish the outputs and commit the group's offset ``next_offset``, in one transaction.

        Raises:
            TransactionFailed: nothing of it is visible to ``read_committed`` readers, unless
                ``in_doubt``. The transaction was aborted (the producer can be used again) or
                the producer closed (``producer_closed``).
        """
        if self._closed:
            raise TransactionFailed(self.partition, "the producer is closed", producer_closed=True)
        topic, number = self.partition
        committing = False
        try:
            self._producer.begin_transaction()
            self._send(tag_events, dead_letters)
            offsets = {TopicPartition(topic, number): OffsetAndMetadata(next_offset, "", -1)}
            self._wait(
                self._manager().send_offsets_to_transaction(offsets, self._group_id), "offsets"
            )
            committing = True
            self._wait(self._manager().begin_commit(), "commit")
        except Exception as error:
            raise self._failed(error, committing) from error

    def trial(self, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]) -> None:
        """Publish the outputs in a transaction that is then aborted: does the broker take them?

        Used to find the record whose outputs the broker refuses; ``read_committed`` readers
        never see them.

        Raises:
            TransactionFailed: the broker refused (the transaction was aborted; the producer is
                still usable unless ``producer_closed``).
        """
        if self._closed:
            raise TransactionFailed(self.partition, "the producer is closed", producer_closed=True)
        try:
            self._producer.begin_transaction()
            self._send(tag_events, dead_letters)
            self.abort()
        except Exception as error:
            raise self._failed(error, committing=False) from error

    def abort(self) -> None:
        """Abort the open transaction (after the broker acknowledged all of it).

        Raises:
            kafka.errors.KafkaError: the abort was not answered in time, or refused.
        """
        self._wait(self._manager().begin_abort(), "abort")

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the producer (an open transaction is left to the next producer of the id)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._producer.close(timeout=timeout_s)
        except Exception as error:
            log.debug("closing a transactional producer failed", error=repr(error))

    def _send(self, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]) -> None:
        send_and_wait(self._producer, self._topics, tag_events, dead_letters, self._timeout_s)

    def _manager(self) -> Any:
        return self._producer._transaction_manager

    def _wait(self, result: Any, step: str) -> None:
        """Wait for a transactional request's answer, at most the timeout."""
        self._producer._sender.wakeup()
        if not result.wait(timeout_ms=self._timeout_s * 1000):
            raise KafkaTimeoutError(f"no answer to the transaction's {step} in {self._timeout_s} s")

    def _failed(self, error: Exception, committing: bool) -> TransactionFailed:
        """Abort what can be aborted; say what state the partition's transaction is in."""
        message = f"transaction of {self.partition[0]}-{self.partition[1]} failed: {error!r}"
        if is_fencing(error) or isinstance(error, TransactionalIdAuthorizationFailedError):
            self.close(0.0)
            return TransactionFailed(
                self.partition, message, fenced=is_fencing(error), producer_closed=True
            )
        if committing or looks_like_outage(error):
            # The commit was asked for: it may be done, or be done later. Or the broker did not
            # answer: it may hold more of the transaction than this client knows (kafka-python
            # ends an abort in the client alone while no AddPartitionsToTxn was answered, and a
            # late answer would carry the broker's transaction on under the same epoch). Either
            # way the producer is not used again; the partition's next producer ends it.
            self.close(0.0)
            return TransactionFailed(
                self.partition, message, in_doubt=committing, producer_closed=True
            )
        try:
            # A refusal (a record too large, say): let every request of the transaction be
            # answered before aborting, for the same reason.
            self._settle()
            self.abort()
        except Exception as abort_failed:
            self.close(0.0)
            return TransactionFailed(
                self.partition,
                f"{message}; abort failed: {abort_failed!r}",
                fenced=is_fencing(abort_failed),
                producer_closed=True,
            )
        return TransactionFailed(self.partition, message)

    def _settle(self) -> None:
        """Wait until the transaction's records and requests are all answered.

        Raises:
            KafkaTimeoutError: not within the timeout.
        """
        deadline = time.monotonic() + self._timeout_s
        self._producer.flush(timeout=self._timeout_s)
        manager = self._manager()
        while manager.has_in_flight_transactional_request() or manager.has_partitions_to_add():
            if time.monotonic() > deadline:
                raise KafkaTimeoutError("the transaction's requests were not answered in time")
            time.sleep(0.005)
