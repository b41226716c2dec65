"""The image consumer (kafka-python 2.3.x): a member of the workers' consumer group.

The consumer never commits on its own (``enable_auto_commit=False``): the loop commits a batch's
offsets only after :meth:`OutputPublisher.publish` has returned, i.e. after the broker has
acknowledged (``acks=all``) every tag event and dead letter of the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata, TopicPartition

from configuration.kafka import CONSUMER_SIZE_LIMITS, connection_options
from schemas.kafka_record import KafkaRecord
from worker.adapters.inflate_limits import DEFAULT_MAX_INFLATED_BYTES, limit_inflation
from worker.adapters.kafka.group_member import GroupListener, TunedKafkaConsumer
from worker.adapters.kafka.offsets import first_offsets, next_offsets, to_kafka_record
from worker.adapters.unreadable import UNREADABLE_ERRORS, unreadable_stand_in
from worker.ports import Partition

RebalanceHook = Callable[[frozenset[Partition]], None]


class ImageConsumer:
    """A member of the workers' consumer group on the images topic.

    Args:
        connection: Kafka bootstrap servers (plaintext), or the client options of the Kafka
            connection settings (:meth:`configuration.kafka.KafkaConnection.kafka_client_options`:
            TLS, SASL).
        topic: The images topic.
        group_id: The consumer group shared by all workers.
        client_id: This worker's id (shows in broker logs and group descriptions).
        on_assignment: Called (from the polling thread) with the partitions held after each
            rebalance; an empty set while partitions are revoked.
        auto_offset_reset: Where a group without committed offsets starts.
        max_poll_interval_ms: Longest gap between polls before the group evicts this worker.
        session_timeout_ms: How long the group waits for heartbeats of a dead worker.
        commit_timeout_ms: How long :meth:`commit` waits for the broker before giving up (the
            batch is then retried: at-least-once).
        max_inflated_bytes: Most bytes one compressed record batch may inflate to; a larger one
            is an unreadable record (:mod:`worker.adapters.inflate_limits`, process-wide).
    """

    def __init__(
        self,
        connection: str | Mapping[str, Any],
        topic: str,
        group_id: str,
        client_id: str,
        on_assignment: Callable[[frozenset[Partition]], None],
        auto_offset_reset: str = "earliest",
        max_poll_interval_ms: int = 300_000,
        session_timeout_ms: int = 10_000,
        commit_timeout_ms: int = 30_000,
        max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
    ) -> None:
        limit_inflation(max_inflated_bytes)
        self._commit_timeout_ms = commit_timeout_ms
        self._session_timeout_s = session_timeout_ms / 1000
        self._consumer = TunedKafkaConsumer(
            **connection_options(connection),
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            max_poll_interval_ms=max_poll_interval_ms,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(100, session_timeout_ms // 3),
            fetch_max_wait_ms=100,
            # kafka-python's default (305 s) would let one call to a hung broker stall the loop
            # for minutes; it must stay above the session timeout.
            request_timeout_ms=max(30_000, session_timeout_ms + 5_000),
            **CONSUMER_SIZE_LIMITS,
        )
        self._assigned: frozenset[Partition] = frozenset()
        self._generation = 0
        self._topic = topic
        self._auto_offset_reset = auto_offset_reset
        self._on_assignment = on_assignment
        self._hooks: tuple[Callable[[], None], RebalanceHook] | None = None
        self._wait_for_topic(topic, timeout_s=30.0)
        self._consumer.subscribe([topic], listener=GroupListener(self._revoked, self._assigned_now))

    def set_rebalance_hooks(
        self, on_revoked: Callable[[], None], on_assigned: RebalanceHook
    ) -> None:
        """Also call ``on_revoked`` before partitions are given up and ``on_assigned`` once new
        ones are held (from the polling thread, inside :meth:`poll_batch`)."""
        self._hooks = (on_revoked, on_assigned)

    def _revoked(self) -> None:
        self._generation += 1
        self._assigned = frozenset()
        if self._hooks is not None:
            self._hooks[0]()
        self._on_assignment(frozenset())

    def _assigned_now(self, partitions: frozenset[Partition]) -> None:
        self._assigned = partitions
        if self._hooks is not None:
            self._hooks[1](partitions)
        self._on_assignment(partitions)

    @property
    def generation(self) -> int:
        """How many times partitions were revoked: a batch polled in an earlier generation may
        hold records this worker no longer owns (and its positions were reset since)."""
        return self._generation

    def _wait_for_topic(self, topic: str, timeout_s: float) -> None:
        """Know the topic's partitions before joining the group.

        A group leader that joins before it has the topic's metadata assigns nothing, and
        kafka-python may then sit with an empty assignment until its next metadata refresh.

        Raises:
            KafkaTimeoutError: the topic has no partitions after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while not self._consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                self._consumer.close(autocommit=False)
                raise KafkaTimeoutError(f"topic {topic!r} has no partitions (does it exist?)")
            time.sleep(0.2)

    @property
    def assigned(self) -> frozenset[Partition]:
        """Partitions held now."""
        return self._assigned

    def poll_batch(self, max_records: int, max_wait_ms: int) -> list[KafkaRecord]:
        """Read up to ``max_records``, waiting at most ``max_wait_ms`` for the batch to fill.

        A record the client cannot parse ends the batch: it is returned as a stand-in with
        ``read_error`` set, and the consumer has sought past it (:mod:`worker.adapters.unreadable`).

        Raises:
            kafka.errors.CorruptRecordError: the client cannot parse a record and does not say
                where (nothing is skipped then).
        """
        deadline = time.monotonic() + max_wait_ms / 1000.0
        batch: list[KafkaRecord] = []
        generation = self._generation
        while len(batch) < max_records:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            try:
                polled = self._consumer.poll(
                    timeout_ms=remaining_ms, max_records=max_records - len(batch)
                )
            except UNREADABLE_ERRORS as error:
                stand_in = unreadable_stand_in(self._consumer, error)
                if stand_in is None:
                    raise
                batch.append(stand_in)
                break
            if self._generation != generation:
                # Partitions were revoked during this poll: the records read before belong to
                # the previous assignment, whose positions were reset; they are read again by
                # whoever holds their partitions now.
                batch, generation = [], self._generation
            for records in polled.values():
                batch.extend(to_kafka_record(r) for r in records)
            if remaining_ms == 0:
                break
        return batch

    def commit(self, records: Sequence[KafkaRecord]) -> None:
        """Commit one past the highest offset of each partition in ``records``.

        Raises:
            kafka.errors.CommitFailedError: the group rebalanced and the partitions moved on.
            kafka.errors.KafkaError: the commit could not be made.
        """
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in next_offsets(records).items()
        }
        if offsets:
            self._consumer.commit(offsets=offsets, timeout_ms=self._commit_timeout_ms)

    def rewind(self, records: Sequence[KafkaRecord]) -> None:
        """Seek back to the first offset of each still-assigned partition in ``records``."""
        held = {TopicPartition(t, p) for t, p in self._assigned}
        for (topic, partition), offset in first_offsets(records).items():
            tp = TopicPartition(topic, partition)
            if tp in held:
                self._consumer.seek(tp, offset)

    def pause(self, partitions: Iterable[Partition]) -> None:
        """Stop fetching from ``partitions`` (records already fetched from them are dropped)."""
        self._consumer.pause(*(TopicPartition(t, p) for t, p in partitions))

    def resume(self, partitions: Iterable[Partition]) -> None:
        """Fetch from ``partitions`` again."""
        self._consumer.resume(*(TopicPartition(t, p) for t, p in partitions))

    def committed(self, partition: Partition, timeout_s: float) -> int | None:
        """The group's committed offset of ``partition`` (asked of the broker), None if none.

        Raises:
            kafka.errors.KafkaError: the broker did not answer in time.
        """
        tp = TopicPartition(*partition)
        # kafka-python 2.3 keeps an unanswered offset request (``_offset_fetch_futures``, by
        # partition set) and hands its answer to the next caller; an answer to a request sent
        # before this call (before the partition's transactional producer was initialised, say)
        # may predate a transaction's commit. Ask afresh.
        pending = getattr(
            getattr(self._consumer, "_coordinator", None), "_offset_fetch_futures", {}
        )
        pending.pop(frozenset([tp]), None)
        offset = self._consumer.committed(tp, timeout_ms=int(timeout_s * 1000))
        return None if offset is None or offset < 0 else int(offset)

    def seek_to(self, partition: Partition, offset: int | None) -> None:
        """Read ``partition`` from ``offset`` next; None: where a group without offsets starts."""
        tp = TopicPartition(*partition)
        if offset is not None:
            self._consumer.seek(tp, offset)
        elif self._auto_offset_reset == "latest":
            self._consumer.seek_to_end(tp)
        else:
            self._consumer.seek_to_beginning(tp)

    def request_rejoin(self) -> None:
        """Rejoin the group at the next poll (the partitions are revoked and assigned again).

        Uses kafka-python 2.3's coordinator (``_coordinator.request_rejoin``); leaves and joins
        again through the public calls when it has none.
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is not None and hasattr(coordinator, "request_rejoin"):
            coordinator.request_rejoin()
            return
        self._consumer.unsubscribe()
        self._revoked()
        self._consumer.subscribe(
            [self._topic], listener=GroupListener(self._revoked, self._assigned_now)
        )

    def lag(self) -> dict[Partition, int]:
        """Records between this worker's position and the end of each assigned partition.

        Reads the high watermark the broker sent with the last fetch and the position the
        consumer keeps, so it makes no network call and cannot stall the loop while the broker
        does not answer. Partitions not fetched from yet are left out.
        """
        lag: dict[Partition, int] = {}
        for topic, partition in sorted(self._assigned):
            tp = TopicPartition(topic, partition)
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            try:
                position = self._consumer.position(tp, timeout_ms=0)
            except KafkaError:
                continue
            if position is not None:
                lag[(topic, partition)] = max(0, int(end) - int(position))
        return lag

    def broker_reachable(self) -> bool:
        """Whether the group coordinator answered a heartbeat within the session timeout.

        Reads the heartbeat record kafka-python 2.3 keeps (``_coordinator.heartbeat``): no
        network call. True when the client keeps no such record.
        """
        heartbeat = getattr(getattr(self._consumer, "_coordinator", None), "heartbeat", None)
        if heartbeat is None:
            return True
        heard = max(heartbeat.last_receive, heartbeat.last_reset)
        return bool(time.time() - heard <= self._session_timeout_s)

    def close(self) -> None:
        """Leave the group (offsets were committed batch by batch; no auto-commit here)."""
        self._consumer.close(autocommit=False)
