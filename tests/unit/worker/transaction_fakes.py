"""A Kafka cluster's transactions in memory, for unit tests of the exactly-once delivery.

:class:`TransactionLog` keeps what a ``read_committed`` reader would see (outputs of committed
transactions only) and the group's offsets committed with them; each partition's transactional
id has an epoch, and opening a producer for it fences the earlier ones, as Kafka's
``InitProducerId`` does. :class:`GroupSource` is the images topic read by one member of the group,
with pauses, seeks to committed offsets, and revocations inside a poll.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from kafka.errors import MessageSizeTooLargeError
from loop_fakes import MemorySource

from schemas.dead_letter import DeadLetter
from schemas.errors import ReasonCode
from schemas.tag_event import TagEvent
from worker.ports import Partition, TransactionFailed


@dataclass
class TransactionLog:
    """Committed outputs and offsets; per partition, the epoch of its transactional id.

    Attributes:
        visible: Image ids (tag events) and dead-letter keys of committed transactions, in order.
        offsets: The group's committed offset per partition.
        epochs: The current epoch of each partition's transactional id.
        failures: Per partition, what its next commits do instead of committing: ``abort``
            (refused, aborted), ``in_doubt_done`` (committed, but the answer is lost),
            ``in_doubt`` (not committed, answer lost), ``fenced``.
        refuse: An image id whose tag event the broker refuses (too large).
        opened: Producers opened, by partition, in order.
        open_failures: Per partition, how many opens fail next.
        trials: Trial transactions run (aborted by design).
    """

    visible: list[str] = field(default_factory=list)
    offsets: dict[Partition, int] = field(default_factory=dict)
    epochs: dict[Partition, int] = field(default_factory=dict)
    failures: dict[Partition, list[str]] = field(default_factory=dict)
    refuse: str | None = None
    opened: list[Partition] = field(default_factory=list)
    open_failures: dict[Partition, int] = field(default_factory=dict)
    trials: int = 0

    def open(self, partition: Partition) -> FakeProducer:
        if self.open_failures.get(partition, 0) > 0:
            self.open_failures[partition] -= 1
            raise TimeoutError(f"no answer to InitProducerId for {partition}")
        self.epochs[partition] = self.epochs.get(partition, 0) + 1
        self.opened.append(partition)
        return FakeProducer(self, partition, self.epochs[partition])


class FakeProducer:
    def __init__(self, log: TransactionLog, partition: Partition, epoch: int) -> None:
        self._log = log
        self.partition = partition
        self.epoch = epoch
        self.closed = False

    def _ids(self, tags: Sequence[TagEvent], letters: Sequence[DeadLetter]) -> list[str]:
        return [e.image_id for e in tags] + [str(d.original_key) for d in letters]

    def _check(self, tags: Sequence[TagEvent], letters: Sequence[DeadLetter]) -> None:
        if self.closed:
            raise TransactionFailed(self.partition, "closed", producer_closed=True)
        if self._log.epochs[self.partition] != self.epoch:
            self.closed = True
            raise TransactionFailed(self.partition, "fenced", fenced=True)
        sent = [e.image_id for e in tags] + [
            str(d.original_key) for d in letters if d.reason is not ReasonCode.OUTPUT_REFUSED
        ]
        if self._log.refuse in sent:
            raise TransactionFailed(
                self.partition, "refused"
            ) from MessageSizeTooLargeError()  # aborted; the producer stays usable

    def commit(
        self, next_offset: int, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]
    ) -> None:
        self._check(tag_events, dead_letters)
        planned = self._log.failures.get(self.partition, [])
        failure = planned.pop(0) if planned else None
        if failure == "abort":
            raise TransactionFailed(self.partition, "aborted")
        if failure == "fenced":
            self.closed = True
            raise TransactionFailed(self.partition, "fenced", fenced=True)
        if failure in (None, "in_doubt_done"):
            self._log.visible += self._ids(tag_events, dead_letters)
            self._log.offsets[self.partition] = next_offset
        if failure in ("in_doubt", "in_doubt_done"):
            self.closed = True
            raise TransactionFailed(self.partition, "no answer to EndTxn", in_doubt=True)

    def trial(self, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]) -> None:
        self._log.trials += 1
        self._check(tag_events, dead_letters)

    def close(self, timeout_s: float = 5.0) -> None:
        self.closed = True


class GroupSource(MemorySource):
    """The images topic as one member of the group reads it, committed offsets from ``log``.

    Attributes:
        paused: Partitions not read from.
        rejoins: How many times a rejoin was asked for.
        revoke_at_poll: Poll number at which the group revokes everything and assigns
            ``reassign`` (inside the poll, as kafka-python does).
    """

    def __init__(self, records: Sequence, journal: list[str], log: TransactionLog) -> None:
        super().__init__(records, journal)
        del self.committed  # the group's offsets are the transaction log's (``committed()``)
        self._log = log
        self._generation = 0
        self._hooks: tuple[Callable[[], None], Callable[[frozenset[Partition]], None]] | None = None
        self.paused: set[Partition] = set()
        self.rejoins = 0
        self.revoke_at_poll: int | None = None
        self.reassign: frozenset[Partition] = frozenset()

    @property
    def generation(self) -> int:
        return self._generation

    def set_rebalance_hooks(
        self,
        on_revoked: Callable[[], None],
        on_assigned: Callable[[frozenset[Partition]], None],
    ) -> None:
        self._hooks = (on_revoked, on_assigned)
        on_assigned(self.assigned)  # the first assignment comes in the first poll

    def poll_batch(self, max_records: int, max_wait_ms: int) -> list:
        if self.revoke_at_poll is not None and self.polls + 1 == self.revoke_at_poll:
            self.polls += 1
            self.revoke_and_assign(self.reassign)
            return []
        held, self._assigned = self._assigned, self._assigned - self.paused
        try:
            return super().poll_batch(max_records, max_wait_ms)
        finally:
            self._assigned = held

    def revoke_and_assign(self, partitions: frozenset[Partition]) -> None:
        assert self._hooks is not None
        self._generation += 1
        self._hooks[0]()
        self._assigned = partitions
        self.paused = set()
        for partition in partitions:  # positions reset to the committed offsets
            self._positions[partition] = self._log.offsets.get(partition, 0)
        self._hooks[1](partitions)

    def commit(self, records: Sequence) -> None:
        raise AssertionError("exactly-once delivery must not commit with the consumer")

    def pause(self, partitions: Iterable[Partition]) -> None:
        self.paused |= set(partitions)

    def resume(self, partitions: Iterable[Partition]) -> None:
        self.paused -= set(partitions)

    def committed(self, partition: Partition, timeout_s: float) -> int | None:
        return self._log.offsets.get(partition)

    def seek_to(self, partition: Partition, offset: int | None) -> None:
        self._positions[partition] = 0 if offset is None else offset

    def request_rejoin(self) -> None:
        self.rejoins += 1
