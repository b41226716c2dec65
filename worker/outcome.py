"""What a batch yields: one tag event or one dead letter per record, and its stage timings.

:class:`Answers` signs the outputs (the worker's id, the clock, the dead letters' inline limit);
the stages of a batch (:mod:`worker.decode_stage`, :mod:`worker.embed_stage`,
:mod:`worker.search_stage`) build them and :class:`BatchOutcome` carries them to delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas.dead_letter import DeadLetter
from schemas.errors import ReasonCode
from schemas.kafka_record import KafkaRecord
from schemas.tag_event import TagEvent


@dataclass(frozen=True)
class StageTimings:
    """Wall-clock seconds one batch spent in each stage of the core."""

    decode: float = 0.0
    embed: float = 0.0
    search: float = 0.0
    vote: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Stage name → seconds, in pipeline order."""
        return {
            "decode": self.decode,
            "embed": self.embed,
            "search": self.search,
            "vote": self.vote,
        }


#: Where a record was read: ``(topic, partition, offset)``.
Position = tuple[str, int, int]


def position_of(record: KafkaRecord) -> Position:
    """The record's topic, partition and offset."""
    return (record.topic, record.partition, record.offset)


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch produced: one tag event or one dead letter per input record.

    Attributes:
        tag_events: The tag events.
        dead_letters: The dead letters (each names the position of its record).
        stage_timings: Seconds spent in each stage.
        tag_event_sources: The position of the record each tag event answers, in the same order.
    """

    tag_events: tuple[TagEvent, ...]
    dead_letters: tuple[DeadLetter, ...]
    stage_timings: StageTimings
    tag_event_sources: tuple[Position, ...] = ()

    def only(self, records: Sequence[KafkaRecord]) -> BatchOutcome:
        """The outputs that answer ``records`` (a part of the batch), same stage timings."""
        kept = {position_of(record) for record in records}
        tagged = [
            (event, source)
            for event, source in zip(self.tag_events, self.tag_event_sources, strict=True)
            if source in kept
        ]
        return BatchOutcome(
            tag_events=tuple(event for event, _ in tagged),
            dead_letters=tuple(
                letter
                for letter in self.dead_letters
                if (letter.source_topic, letter.source_partition, letter.source_offset) in kept
            ),
            stage_timings=self.stage_timings,
            tag_event_sources=tuple(source for _, source in tagged),
        )


@dataclass(frozen=True)
class Answers:
    """How a batch's outputs are signed: the worker, the clock, the dead letters' inline limit."""

    worker_id: str
    clock: Callable[[], datetime]
    dead_letter_max_inline_bytes: int = 1_000_000

    def dead_letter(self, record: KafkaRecord, reason: ReasonCode, message: str) -> DeadLetter:
        """The dead letter that answers ``record``."""
        return DeadLetter.from_record(
            record,
            reason=reason,
            message=message,
            worker_id=self.worker_id,
            now=self.clock(),
            max_inline_bytes=self.dead_letter_max_inline_bytes,
        )
