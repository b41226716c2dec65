"""Helpers of the exactly-once delivery for the input partitions' parts of a batch."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.dead_letter import DeadLetter
from schemas.tag_event import TagEvent
from worker.core import BatchOutcome
from worker.ports import PartitionTransactions


class TrialSink:
    """A sink whose publish is an aborted trial transaction of one partition's producer."""

    def __init__(self, producer: PartitionTransactions) -> None:
        self._producer = producer

    def publish(self, tag_events: Sequence[TagEvent], dead_letters: Sequence[DeadLetter]) -> None:
        self._producer.trial(tag_events, dead_letters)

    def close(self, timeout_s: float = 10.0) -> None:
        return None


def joined(outcome: BatchOutcome, parts: list[BatchOutcome]) -> BatchOutcome:
    """The parts' outputs as one batch's (stage timings are the batch's)."""
    return BatchOutcome(
        tag_events=tuple(e for p in parts for e in p.tag_events),
        dead_letters=tuple(d for p in parts for d in p.dead_letters),
        stage_timings=outcome.stage_timings,
        tag_event_sources=tuple(s for p in parts for s in p.tag_event_sources),
    )
