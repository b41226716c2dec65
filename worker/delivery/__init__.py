"""How a batch's outputs are delivered and its offsets committed: the worker's guarantee.

:class:`~worker.delivery.at_least_once.AtLeastOnce` (the default) publishes a batch's outputs,
waits for the broker's acknowledgement, then commits the batch's offsets with the consumer: a
crash between the two tags the batch again. :class:`~worker.delivery.exactly_once.ExactlyOnce`
publishes each input partition's outputs and offset in one Kafka transaction, so that a
``read_committed`` reader sees each photo's output exactly once. The loop
(:mod:`worker.service`) is written against :class:`Delivery` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from schemas.kafka_record import KafkaRecord
from worker.outcome import BatchOutcome


@dataclass(frozen=True)
class Delivered:
    """What a batch's publish delivered.

    Attributes:
        outcome: The outputs published (stand-ins in place of refused ones).
        commit_s: Seconds of the publish spent committing (transactions), 0 when the commit
            comes after (:meth:`Delivery.commit`).
    """

    outcome: BatchOutcome
    commit_s: float = 0.0


class BatchRevoked(Exception):
    """The batch was polled before its partitions were revoked: it is dropped, not retried
    (the partitions' positions were reset; their records are read again by their holder)."""


class Delivery(Protocol):
    """Publishes batches and commits their offsets (see the module's docstring)."""

    def generation(self) -> int:
        """The consumer's assignment generation now (a batch remembers the one it was polled in)."""
        ...

    def is_current(self, generation: int) -> bool:
        """Whether a batch polled in ``generation`` may still be published."""
        ...

    def prepare(self) -> None:
        """Between batches, in the loop's thread: make newly held partitions ready."""
        ...

    def publish(
        self, records: Sequence[KafkaRecord], outcome: BatchOutcome, generation: int
    ) -> Delivered:
        """Publish the batch's outputs (in the publishing thread).

        Raises:
            BatchRevoked: its partitions were revoked since it was polled.
            Exception: nothing, or only some partitions' part, was delivered; the batch is
                rewound (:meth:`rewind`) and retried after a pause.
        """
        ...

    def commit(
        self, records: Sequence[KafkaRecord], delivered: Delivered, publish_s: float
    ) -> bool:
        """In the loop's thread, after :meth:`publish`: commit (if not done) and report the batch.

        Returns:
            False when the group refused the commit after a rebalance (counted).
        """
        ...

    def rewind(self, records: Sequence[KafkaRecord]) -> None:
        """After a failure, in the loop's thread: read ``records`` again where not delivered."""
        ...

    def close(self) -> None:
        """Flush and close the producers."""
        ...
