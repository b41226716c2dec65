"""The worker's decision logic: a pure function of one batch of Kafka records.

Records in; tag events, dead letters and stage timings out: :func:`process_batch` is the decode
stage (:mod:`worker.decode_stage`), the embed stage (:mod:`worker.embed_stage`) and the search
stage (:mod:`worker.search_stage`, search and vote) in turn; the pipelined loop runs the three in
threads of their own (:mod:`worker.service`). The model, the reference gallery and
the photo store come in as the small protocols of :mod:`worker.ports`, so this module knows nothing
of Kafka, Milvus, Keras or Prometheus. Every record yields exactly one output: a tag event, or a
dead letter naming why it could not be tagged. Failures of the infrastructure (the index cannot be
reached) are not input errors: they propagate, and the caller retries the batch without committing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import datetime

from schemas.kafka_record import KafkaRecord
from schemas.preprocessing import PreprocessingSpec
from schemas.vote import VoteSettings
from worker.decode_stage import Decoded, Pacing, Rejected, prepare_batch
from worker.embed_stage import embed_prepared
from worker.outcome import Answers, BatchOutcome
from worker.ports import Embedder, PhotoFetcher, ReferenceIndex
from worker.search_stage import search_and_vote


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
    """Embed, search and vote a batch whose photos :func:`prepare_batch` made ready:
    :func:`embed_prepared`, then :func:`search_and_vote`.

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
    answers = Answers(worker_id, clock, dead_letter_max_inline_bytes)
    embedded = embed_prepared(
        prepared,
        embedder=embedder,
        answers=answers,
        decode_s=decode_s,
        timer=timer,
        on_stage=on_stage,
    )
    return search_and_vote(
        embedded, index=index, vote=vote, answers=answers, timer=timer, on_stage=on_stage
    )
