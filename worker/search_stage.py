"""The search stage of a batch: one gallery search for the batch, then each photo's vote.

The loop runs it in its publishing thread, beside the embedding of the next batch
(:mod:`worker.pipeline_stages`); an unreachable gallery is not the input's fault: the error
propagates and the batch is retried, never dead-lettered.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from schemas.errors import InputError
from schemas.tag_event import Neighbour, TagEvent, latency_ms_between
from schemas.vote import VoteSettings, decide_landmark
from worker.embed_stage import Embedded
from worker.outcome import Answers, BatchOutcome, Position, StageTimings, position_of
from worker.ports import ReferenceIndex


def search_and_vote(
    embedded: Embedded,
    *,
    index: ReferenceIndex,
    vote: VoteSettings,
    answers: Answers,
    timer: Callable[[], float] = time.perf_counter,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> BatchOutcome:
    """Search the gallery once for an embedded batch and vote each photo's landmark.

    Raises:
        Exception: whatever ``index.search`` raises (see :func:`worker.core.process_batch`).
    """
    started = timer()
    on_stage("search")
    neighbours = _search(index, embedded.embeddings, vote.k, len(embedded.photos))
    search_done = timer()

    on_stage("vote")
    tag_events: list[TagEvent] = []
    sources: list[Position] = []
    dead_letters = list(embedded.dead_letters)
    gallery_version = index.gallery_version
    for item, found in zip(embedded.photos, neighbours, strict=True):
        landmark, confidence = decide_landmark(found, vote)
        tagged_at = answers.clock()
        published_at = item.event.published_at
        try:
            tag_events.append(
                TagEvent(
                    image_id=item.event.image_id,
                    landmark=landmark,
                    confidence=confidence,
                    neighbours=tuple(found[: vote.k]),
                    model_version=embedded.model_version,
                    gallery_version=gallery_version,
                    worker_id=answers.worker_id,
                    published_at=published_at,
                    tagged_at=tagged_at,
                    latency_ms=latency_ms_between(published_at, tagged_at),
                    trace_id=item.event.trace_id,
                )
            )
            sources.append(position_of(item.record))
        except InputError as error:
            dead_letters.append(answers.dead_letter(item.record, error.reason, error.message))
    vote_done = timer()

    return BatchOutcome(
        tag_events=tuple(tag_events),
        dead_letters=tuple(dead_letters),
        stage_timings=StageTimings(
            decode=embedded.decode_s,
            embed=embedded.embed_s,
            search=search_done - started,
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
