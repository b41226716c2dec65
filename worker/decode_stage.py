"""The first stage of a batch: parse each event, fetch referenced photos, decode, within a budget.

Parsing is cheap and runs in the loop's thread; fetching and decoding run in the decoding pool.
The stage waits for them at most the batch's fetch budget (derived from the consumer's poll
interval, so that no slow host can hold the consumer past it): a reference not fetched by then
is ``reference_unreachable`` and its fetch is cut short; an inline photo still waiting for a
thread is decoded in the loop's thread. When the worker is asked to stop while references of the
batch are still being fetched, the stage gives the batch up at once (:class:`BatchStopped`):
nothing of it is published or committed; inline photos being decoded are let finish.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass
from typing import Any

import structlog

from schemas.errors import InputError, ReasonCode
from schemas.image_event import ImageEvent, InlinePhoto, decode_image_event
from schemas.kafka_record import KafkaRecord
from schemas.preprocessing import PreprocessingSpec, decode_photo
from worker.ports import BatchDecoder, PhotoFetcher

log = structlog.get_logger("landmark.worker")

#: How often the stage looks at the stop request while it waits.
_WAKE_S = 0.05


class BatchStopped(Exception):
    """The worker was asked to stop while the batch was being fetched; the batch is given up."""


@dataclass(frozen=True)
class Pacing:
    """How the loop paces one batch.

    Attributes:
        fetch_budget_s: Longest wait for the batch's fetches and decodes.
        stop_requested: True once the worker is asked to stop.
        on_stage: Told the name of each stage as the batch enters it.
        now: Monotonic seconds, for the budget.
    """

    fetch_budget_s: float = math.inf
    stop_requested: Callable[[], bool] = lambda: False
    on_stage: Callable[[str], None] = lambda stage: None
    now: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class Decoded:
    """A record whose photo is ready for the model.

    Attributes:
        image: ``(S, S, 3)`` uint8 RGB: a numpy array, or an accelerator's array when a
            :class:`~worker.ports.BatchDecoder` decoded it (the embedder takes both).
    """

    record: KafkaRecord
    event: ImageEvent
    image: Any


@dataclass(frozen=True)
class _ForBatch:
    """A fetched photo left for the batch decoder."""

    record: KafkaRecord
    event: ImageEvent
    data: bytes


@dataclass(frozen=True)
class Rejected:
    """A record that cannot be tagged, and why."""

    record: KafkaRecord
    error: InputError


def prepare_batch(
    records: Sequence[KafkaRecord],
    fetcher: PhotoFetcher,
    spec: PreprocessingSpec,
    pool: Executor,
    pacing: Pacing,
    batch_decoder: BatchDecoder | None = None,
) -> list[Decoded | Rejected]:
    """Parse, fetch and decode every record, in order, within ``pacing.fetch_budget_s``.

    With a ``batch_decoder``, the photos it takes are decoded together once all are fetched;
    the others, and those it gives back, are decoded on the CPU in ``pool``.

    Raises:
        BatchStopped: ``pacing.stop_requested()`` became true before the stage was done.
    """
    deadline = pacing.now() + pacing.fetch_budget_s
    parsed = [_parse(record) for record in records]
    futures: dict[int, Future[Decoded | Rejected | _ForBatch]] = {
        index: pool.submit(_fetch_and_decode, item, fetcher, spec, batch_decoder)
        for index, item in enumerate(parsed)
        if isinstance(item, tuple)
    }
    pending = set(futures.values())
    fetches = {futures[i] for i, item in enumerate(parsed) if _is_fetch(item)}
    while pending:
        if pacing.stop_requested() and pending & fetches:
            # A reference may take seconds to arrive; inline photos decode in milliseconds and
            # are let finish, so that stopping gives up only batches still waiting on the network.
            _give_up(futures.values(), fetcher)
            raise BatchStopped
        remaining = deadline - pacing.now()
        if remaining <= 0:
            break
        pending = wait(pending, timeout=min(remaining, _WAKE_S)).not_done
    late = frozenset(pending)
    if late:
        _give_up(late, fetcher)
    results: list[Decoded | Rejected | _ForBatch] = []
    for index, item in enumerate(parsed):
        if isinstance(item, Rejected):
            results.append(item)
            continue
        future = futures[index]
        if future in late and not isinstance(item[1], InlinePhoto):
            results.append(Rejected(item[0], _not_fetched_in_time(pacing.fetch_budget_s)))
        elif future.cancelled():  # an inline photo that never got a thread: quick to decode
            results.append(_fetch_and_decode(item, fetcher, spec, None))
        else:  # done, or an inline photo being decoded (bounded by the pixel limit)
            results.append(future.result())
    if batch_decoder is None:
        return [r for r in results if not isinstance(r, _ForBatch)]
    return _decode_batch(results, batch_decoder, spec, pool)


def _decode_batch(
    results: list[Decoded | Rejected | _ForBatch],
    decoder: BatchDecoder,
    spec: PreprocessingSpec,
    pool: Executor,
) -> list[Decoded | Rejected]:
    """Decode the photos left for the batch decoder; what it gives back goes to the CPU."""
    waiting = [r for r in results if isinstance(r, _ForBatch)]
    try:
        decoded = iter(decoder.decode([item.data for item in waiting], spec) if waiting else [])
    except Exception as error:  # an accelerator failure must not cost the photos
        log.warning("batch decoder failed; its photos are decoded on the CPU", error=repr(error))
        decoded = iter([None] * len(waiting))
    resolved: list[Decoded | Rejected | Future[Decoded | Rejected]] = []
    for item in results:
        if not isinstance(item, _ForBatch):
            resolved.append(item)
            continue
        output = next(decoded)
        if isinstance(output, InputError):
            resolved.append(Rejected(item.record, output))
        elif output is None:
            resolved.append(pool.submit(_decode_on_cpu, item.record, item.event, item.data, spec))
        else:
            resolved.append(Decoded(item.record, item.event, output))
    return [r.result() if isinstance(r, Future) else r for r in resolved]


def _is_fetch(item: Rejected | tuple[KafkaRecord, ImageEvent]) -> bool:
    return isinstance(item, tuple) and not isinstance(item[1], InlinePhoto)


def _parse(record: KafkaRecord) -> Rejected | tuple[KafkaRecord, ImageEvent]:
    if record.read_error is not None:
        return Rejected(record, InputError(ReasonCode.UNREADABLE_RECORD, record.read_error))
    try:
        return record, decode_image_event(record)
    except InputError as error:
        return Rejected(record, error)


def _fetch_and_decode(
    item: tuple[KafkaRecord, ImageEvent],
    fetcher: PhotoFetcher,
    spec: PreprocessingSpec,
    batch_decoder: BatchDecoder | None,
) -> Decoded | Rejected | _ForBatch:
    """Fetch the photo if referenced and decode it (or leave it for the batch decoder); input
    errors become data."""
    record, event = item
    try:
        data = event.data if isinstance(event, InlinePhoto) else fetcher.fetch(event.uri)
        if batch_decoder is not None and batch_decoder.takes(data, spec):
            return _ForBatch(record, event, data)
    except InputError as error:
        return Rejected(record, error)
    except Exception as error:  # a fetcher or decoder bug on one odd photo must not stop the batch
        return _undecodable(record, error)
    return _decode_on_cpu(record, event, data, spec)


def _decode_on_cpu(
    record: KafkaRecord, event: ImageEvent, data: bytes, spec: PreprocessingSpec
) -> Decoded | Rejected:
    try:
        image = decode_photo(data, spec, refuse_blank=True)
    except InputError as error:
        return Rejected(record, error)
    except Exception as error:  # a decoder bug on one odd photo must not stop the batch
        return _undecodable(record, error)
    return Decoded(record, event, image)


def _undecodable(record: KafkaRecord, error: Exception) -> Rejected:
    return Rejected(
        record,
        InputError(
            ReasonCode.UNDECODABLE_IMAGE, f"decoding failed: {type(error).__name__}: {error}"
        ),
    )


def _give_up(
    futures: Iterable[Future[Decoded | Rejected | _ForBatch]], fetcher: PhotoFetcher
) -> None:
    """Cancel what has not started, then cut the fetches in progress short."""
    for future in futures:
        future.cancel()
    fetcher.abort_in_flight()


def _not_fetched_in_time(budget_s: float) -> InputError:
    return InputError(
        ReasonCode.REFERENCE_UNREACHABLE,
        f"not fetched within the batch's fetch budget of {budget_s:g} s",
    )
