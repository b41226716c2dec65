"""In-memory stand-ins for Kafka that the loop benchmarks share (``bench_loop``, ``gpu/``).

:class:`ReplaySource` replays records as an images topic of one partition that is never
rebalanced; :class:`CountingSink` counts what it is asked to publish and keeps nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from schemas.kafka_record import KafkaRecord


class ReplaySource:
    """The images topic in memory: ``batches`` batches of the given records, then nothing."""

    def __init__(self, records: list[KafkaRecord], batch: int, batches: int) -> None:
        self._records, self._batch, self._left = records, batch, batches
        self._offset = 0
        self.on_empty: Callable[[], None] = lambda: None

    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        return frozenset({("images", 0)})

    @property
    def generation(self) -> int:
        return 0  # never rebalanced

    def poll_batch(self, max_records: int, max_wait_ms: int) -> list[KafkaRecord]:
        if self._left == 0:
            self.on_empty()
            return []
        self._left -= 1
        out = []
        for i in range(self._batch):
            template = self._records[(self._offset + i) % len(self._records)]
            out.append(
                KafkaRecord(
                    key=template.key,
                    value=template.value,
                    headers=template.headers,
                    topic="images",
                    partition=0,
                    offset=self._offset + i,
                )
            )
        self._offset += self._batch
        return out

    def commit(self, records: Sequence[KafkaRecord]) -> None:
        """Offsets are not kept."""

    def rewind(self, records: Sequence[KafkaRecord]) -> None:
        raise AssertionError("no failure expected in the GPU check")

    def lag(self) -> dict[tuple[str, int], int]:
        return {("images", 0): self._left * self._batch}

    def broker_reachable(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to leave."""


class CountingSink:
    """Counts what it is asked to publish; keeps nothing."""

    def __init__(self) -> None:
        self.tagged = 0
        self.dead_letters = 0

    def publish(self, tag_events: Sequence[Any], dead_letters: Sequence[Any]) -> None:
        self.tagged += len(tag_events)
        self.dead_letters += len(dead_letters)

    def close(self, timeout_s: float = 10.0) -> None:
        """Nothing to flush."""
