"""The worker's decision logic: a pure function of one batch of Kafka records.

Records in; tag events, dead letters and stage timings out. The model, the reference gallery and
the photo store come in as the small protocols of :mod:`worker.ports`, so this module knows nothing
of Kafka, Milvus, Keras or Prometheus. Every record yields exactly one output: a tag event, or a
dead letter naming why it could not be tagged. Failures of the infrastructure (the index cannot be
reached) are not input errors: they propagate, and the caller retries the batch without committing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from schemas.dead_letter import DeadLetter
from schemas.errors import InputError, ReasonCode
from schemas.kafka_record import KafkaRecord
from schemas.preprocessing import PreprocessingSpec
from schemas.tag_event import Neighbour, TagEvent, latency_ms_between
from schemas.vote import VoteSettings, decide_landmark
from worker.decode_stage import Decoded, Pacing, Rejected, prepare_batch
from worker.embed_stage import embed_batch
from worker.ports import Embedder, PhotoFetcher, ReferenceIndex


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


def process_batch(
    records: Sequence[KafkaRecord],
    *,
    embedder: Embedder,
    index: ReferenceIndex,
    fetcher: PhotoFetcher,
    spec: PreprocessingSpec,
    vote: VoteSettings,
    worker_id: str,
    clock: Callable[[], datetime],
    decode_pool: Executor,
    timer: Callable[[], float] = time.perf_counter,
    dead_letter_max_inline_bytes: int = 1_000_000,
    pacing: Pacing | None = None,
) -> BatchOutcome:
    """Tag one batch of image events: :func:`prepare_batch`, then :func:`finish_batch`.

    Decodes the photos in ``decode_pool`` (fetching references through ``fetcher``), embeds all
    decodable photos in one call, searches the index once for the batch, and votes per photo.

    Args:
        records: The batch, as read from the images topic.
        embedder: The model (the batch is embedded in one call; on failure, photo by photo).
        index: The reference gallery.
        fetcher: Resolves photo references.
        spec: The preprocessing the model expects (from its manifest).
        vote: k, weighting and threshold of the vote.
        worker_id: Named in every output.
        clock: Current UTC time (tag and failure timestamps).
        decode_pool: Where photos are fetched and decoded in parallel.
        timer: Monotonic seconds, for the stage timings.
        dead_letter_max_inline_bytes: Largest original value a dead letter carries inline.
        pacing: The fetch stage's budget, the stop request, stage reports
            (:mod:`worker.decode_stage`); none of them by default.

    Returns:
        One tag event per taggable record and one dead letter per other record.

    Raises:
        BatchStopped: the worker was asked to stop while the batch was being fetched.
        Exception: whatever ``index.search`` raises (an unreachable gallery is not the input's
            fault; the caller must retry the batch rather than dead-letter it).
    """
    pacing = pacing if pacing is not None else Pacing()
    started = timer()
    pacing.on_stage("decode")
    prepared = prepare_batch(records, fetcher, spec, decode_pool, pacing)
    return finish_batch(
        prepared,
        embedder=embedder,
        index=index,
        vote=vote,
        worker_id=worker_id,
        clock=clock,
        decode_s=timer() - started,
        timer=timer,
        dead_letter_max_inline_bytes=dead_letter_max_inline_bytes,
        on_stage=pacing.on_stage,
    )


def finish_batch(
    prepared: Sequence[Decoded | Rejected],
    *,
    embedder: Embedder,
    index: ReferenceIndex,
    vote: VoteSettings,
    worker_id: str,
    clock: Callable[[], datetime],
    decode_s: float,
    timer: Callable[[], float] = time.perf_counter,
    dead_letter_max_inline_bytes: int = 1_000_000,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> BatchOutcome:
    """Embed, search and vote a batch whose photos :func:`prepare_batch` made ready.

    Args:
        prepared: One decoded photo or one rejection per record of the batch, in order.
        decode_s: Seconds the batch spent being prepared (reported as the decode stage).
        on_stage: Told the name of each stage as the batch enters it.
        embedder, index, vote, worker_id, clock, timer, dead_letter_max_inline_bytes: as for
            :func:`process_batch`.

    Returns:
        One tag event per taggable record and one dead letter per other record.

    Raises:
        Exception: whatever ``index.search`` raises (see :func:`process_batch`).
    """

    def dead_letter(record: KafkaRecord, reason: ReasonCode, message: str) -> DeadLetter:
        return DeadLetter.from_record(
            record,
            reason=reason,
            message=message,
            worker_id=worker_id,
            now=clock(),
            max_inline_bytes=dead_letter_max_inline_bytes,
        )

    decoded = [item for item in prepared if isinstance(item, Decoded)]
    dead_letters = [
        dead_letter(item.record, item.error.reason, item.error.message)
        for item in prepared
        if isinstance(item, Rejected)
    ]
    decode_done = timer()

    on_stage("embed")
    embeddings, failed = embed_batch(embedder, decoded)
    for item, message in failed:
        dead_letters.append(dead_letter(item.record, ReasonCode.EMBEDDING_FAILED, message))
    failed_ids = {id(item) for item, _ in failed}
    embedded = [item for item in decoded if id(item) not in failed_ids]
    embed_done = timer()

    on_stage("search")
    neighbours = _search(index, embeddings, vote.k, len(embedded))
    search_done = timer()

    on_stage("vote")
    tag_events: list[TagEvent] = []
    sources: list[Position] = []
    gallery_version, model_version = index.gallery_version, embedder.model_version
    for item, found in zip(embedded, neighbours, strict=True):
        landmark, confidence = decide_landmark(found, vote)
        tagged_at = clock()
        published_at = item.event.published_at
        try:
            tag_events.append(
                TagEvent(
                    image_id=item.event.image_id,
                    landmark=landmark,
                    confidence=confidence,
                    neighbours=tuple(found[: vote.k]),
                    model_version=model_version,
                    gallery_version=gallery_version,
                    worker_id=worker_id,
                    published_at=published_at,
                    tagged_at=tagged_at,
                    latency_ms=latency_ms_between(published_at, tagged_at),
                    trace_id=item.event.trace_id,
                )
            )
            sources.append(position_of(item.record))
        except InputError as error:
            dead_letters.append(dead_letter(item.record, error.reason, error.message))
    vote_done = timer()

    return BatchOutcome(
        tag_events=tuple(tag_events),
        dead_letters=tuple(dead_letters),
        stage_timings=StageTimings(
            decode=decode_s,
            embed=embed_done - decode_done,
            search=search_done - embed_done,
            vote=vote_done - search_done,
        ),
        tag_event_sources=tuple(sources),
    )


def _search(index: ReferenceIndex, embeddings: np.ndarray, k: int, n: int) -> list[list[Neighbour]]:
    if n == 0:
        return []
    found = index.search(embeddings, k)
    if len(found) != n:
        raise RuntimeError(f"index returned {len(found)} result lists for {n} embeddings")
    return found
