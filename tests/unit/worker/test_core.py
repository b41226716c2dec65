"""The pure batch function, driven by in-memory ports."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loop_fakes import SlowFetcher
from worker_fakes import (
    BLUE,
    GREEN,
    GREY,
    PUBLISHED_AT,
    RED,
    ColourIndex,
    DictFetcher,
    MeanColourEmbedder,
    inline_record,
    photo_bytes,
    raw_record,
    reference_record,
    solid_photo_bytes,
)

from schemas.errors import ReasonCode
from schemas.kafka_record import KafkaRecord
from schemas.preprocessing import PreprocessingSpec
from schemas.vote import VoteSettings
from worker.core import process_batch
from worker.decode_stage import Pacing
from worker.outcome import BatchOutcome

TAGGED_AT = PUBLISHED_AT + timedelta(milliseconds=250)
SPEC = PreprocessingSpec(input_size=16)
VOTE = VoteSettings(k=3, weighting="similarity", threshold=0.5, rule="weighted_knn")


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def run(records: list[KafkaRecord], pool: ThreadPoolExecutor, **overrides: Any) -> BatchOutcome:
    arguments: dict[str, Any] = {
        "embedder": MeanColourEmbedder(),
        "index": ColourIndex(),
        "fetcher": DictFetcher({}),
        "spec": SPEC,
        "vote": VOTE,
        "worker_id": "worker-1",
        "clock": lambda: TAGGED_AT,
        "decode_pool": pool,
    }
    arguments.update(overrides)
    return process_batch(records, **arguments)


def test_red_photo_is_tagged_with_the_red_landmark(pool: ThreadPoolExecutor) -> None:
    outcome = run([inline_record("img-1", RED)], pool)
    (event,) = outcome.tag_events
    assert event.image_id == "img-1"
    assert event.landmark is not None and event.landmark.landmark_id == "red_fort"
    assert event.neighbours[0].landmark_id == "red_fort"
    assert outcome.dead_letters == ()


def test_tag_event_names_model_gallery_and_worker(pool: ThreadPoolExecutor) -> None:
    (event,) = run([inline_record("img-1", GREEN)], pool).tag_events
    assert (event.model_version, event.gallery_version, event.worker_id) == (
        "model-a",
        "gallery-1",
        "worker-1",
    )


def test_latency_is_measured_from_the_published_at_header(pool: ThreadPoolExecutor) -> None:
    (event,) = run([inline_record("img-1", BLUE)], pool).tag_events
    assert event.published_at == PUBLISHED_AT
    assert event.latency_ms == pytest.approx(250.0)


def test_trace_id_is_passed_through(pool: ThreadPoolExecutor) -> None:
    (event,) = run([inline_record("img-1", BLUE, trace_id="trace-42")], pool).tag_events
    assert event.trace_id == "trace-42"


def test_equidistant_photo_gets_no_landmark(pool: ThreadPoolExecutor) -> None:
    """Grey is equally similar to red, green and blue: confidence 1/3 < threshold."""
    (event,) = run([inline_record("img-grey", GREY)], pool).tag_events
    assert event.landmark is None
    assert event.confidence == pytest.approx(1 / 3, abs=0.01)


def test_neighbours_are_cut_to_k(pool: ThreadPoolExecutor) -> None:
    vote = VoteSettings(k=2, weighting="uniform", threshold=0.0, rule="weighted_knn")
    (event,) = run([inline_record("img-1", RED)], pool, vote=vote).tag_events
    assert len(event.neighbours) == 2


def test_garbage_bytes_are_dead_lettered_with_a_decode_reason(pool: ThreadPoolExecutor) -> None:
    outcome = run([raw_record(b"junk", b"\x00\x01 not a photo at all" * 10, offset=7)], pool)
    (letter,) = outcome.dead_letters
    assert letter.reason in (ReasonCode.UNSUPPORTED_FORMAT, ReasonCode.UNDECODABLE_IMAGE)
    assert (letter.original_key, letter.source_offset, letter.worker_id) == ("junk", 7, "worker-1")
    assert outcome.tag_events == ()


def test_truncated_jpeg_is_dead_lettered_as_undecodable(pool: ThreadPoolExecutor) -> None:
    truncated = photo_bytes(RED, fmt="JPEG")[:60]
    (letter,) = run([raw_record(b"cut", truncated)], pool).dead_letters
    assert letter.reason == ReasonCode.UNDECODABLE_IMAGE


def test_blank_photo_is_dead_lettered_not_tagged(pool: ThreadPoolExecutor) -> None:
    """A flat red photo is nearest to the red landmark, but nothing in it can be recognised."""
    (letter,) = run([raw_record(b"flat", solid_photo_bytes(RED, fmt="JPEG"))], pool).dead_letters
    assert letter.reason == ReasonCode.BLANK_IMAGE


def test_a_record_the_client_could_not_read_is_dead_lettered_where_it_is(
    pool: ThreadPoolExecutor,
) -> None:
    unreadable = KafkaRecord(
        key=None, value=None, topic="images", partition=1, offset=42, read_error="bad header name"
    )
    (letter,) = run([unreadable, inline_record("img-1", RED, offset=43)], pool).dead_letters
    assert (letter.reason, letter.message) == (ReasonCode.UNREADABLE_RECORD, "bad header name")
    assert (letter.source_partition, letter.source_offset) == (1, 42)


def test_record_without_key_is_a_schema_violation(pool: ThreadPoolExecutor) -> None:
    (letter,) = run([raw_record(None, photo_bytes(RED, fmt="JPEG"))], pool).dead_letters
    assert letter.reason == ReasonCode.SCHEMA_VIOLATION


def test_too_small_photo_is_dead_lettered(pool: ThreadPoolExecutor) -> None:
    (letter,) = run([raw_record(b"tiny", photo_bytes(RED, size=4, fmt="JPEG"))], pool).dead_letters
    assert letter.reason == ReasonCode.IMAGE_TOO_SMALL


def test_reference_is_fetched_and_tagged(pool: ThreadPoolExecutor) -> None:
    fetcher = DictFetcher({"file:///photos/b.png": photo_bytes(BLUE)})
    outcome = run([reference_record("img-ref", "file:///photos/b.png")], pool, fetcher=fetcher)
    (event,) = outcome.tag_events
    assert event.landmark is not None and event.landmark.landmark_id == "blue_mosque"


def test_unreachable_reference_is_dead_lettered(pool: ThreadPoolExecutor) -> None:
    (letter,) = run([reference_record("img-ref", "file:///photos/gone.png")], pool).dead_letters
    assert letter.reason == ReasonCode.REFERENCE_UNREACHABLE


def test_batch_is_embedded_in_one_call(pool: ThreadPoolExecutor) -> None:
    embedder = MeanColourEmbedder()
    records = [inline_record(f"img-{i}", c, i) for i, c in enumerate([RED, GREEN, BLUE, RED])]
    run(records, pool, embedder=embedder)
    assert embedder.calls == [4]


def test_batch_is_searched_once(pool: ThreadPoolExecutor) -> None:
    index = ColourIndex()
    records = [inline_record(f"img-{i}", c, i) for i, c in enumerate([RED, GREEN, BLUE])]
    run(records, pool, index=index)
    assert index.calls == [3]


def test_embedding_failure_retries_photo_by_photo(pool: ThreadPoolExecutor) -> None:
    """Only the photo the model fails on is dead-lettered; the rest of the batch is tagged."""
    embedder = MeanColourEmbedder(fail_on_colour=GREEN)
    records = [
        inline_record("r", RED, 0),
        inline_record("g", GREEN, 1),
        inline_record("b", BLUE, 2),
    ]
    outcome = run(records, pool, embedder=embedder)
    assert [e.image_id for e in outcome.tag_events] == ["r", "b"]
    (letter,) = outcome.dead_letters
    assert (letter.original_key, letter.reason) == ("g", ReasonCode.EMBEDDING_FAILED)
    assert embedder.calls == [3, 1, 1, 1]


def test_non_finite_embedding_row_dead_letters_only_that_photo(pool: ThreadPoolExecutor) -> None:
    embedder = MeanColourEmbedder(non_unit_on_colour=BLUE)
    records = [inline_record("r", RED, 0), inline_record("b", BLUE, 1)]
    outcome = run(records, pool, embedder=embedder)
    assert [e.image_id for e in outcome.tag_events] == ["r"]
    assert [(d.original_key, d.reason) for d in outcome.dead_letters] == [
        ("b", ReasonCode.EMBEDDING_FAILED)
    ]


def test_index_failure_propagates_instead_of_dead_lettering(pool: ThreadPoolExecutor) -> None:
    index = ColourIndex(fail=ConnectionError("milvus down"))
    with pytest.raises(ConnectionError):
        run([inline_record("img-1", RED)], pool, index=index)


def test_batch_without_decodable_photos_calls_neither_model_nor_index(
    pool: ThreadPoolExecutor,
) -> None:
    embedder, index = MeanColourEmbedder(), ColourIndex()
    outcome = run([raw_record(b"x", b"garbage" * 20)], pool, embedder=embedder, index=index)
    assert (embedder.calls, index.calls, len(outcome.dead_letters)) == ([], [], 1)


def test_empty_batch_gives_empty_outcome(pool: ThreadPoolExecutor) -> None:
    outcome = run([], pool)
    assert (outcome.tag_events, outcome.dead_letters) == ((), ())


def test_stage_timings_come_from_the_timer(pool: ThreadPoolExecutor) -> None:
    ticks = iter(range(0, 100, 10))
    outcome = run([inline_record("img-1", RED)], pool, timer=lambda: float(next(ticks)))
    assert outcome.stage_timings.as_dict() == {
        "decode": 10.0,
        "embed": 10.0,
        "search": 10.0,
        "vote": 10.0,
    }


_KINDS = st.sampled_from(["red", "green", "grey", "garbage", "keyless", "ref_ok", "ref_missing"])


@settings(max_examples=25, deadline=None)
@given(kinds=st.lists(_KINDS, max_size=12))
def test_every_record_yields_exactly_one_output(kinds: list[str]) -> None:
    fetcher = DictFetcher({"file:///p/ok.png": photo_bytes(RED)})
    records: list[KafkaRecord] = []
    for offset, kind in enumerate(kinds):
        image_id = f"img-{offset}"
        if kind in ("red", "green", "grey"):
            records.append(
                inline_record(image_id, {"red": RED, "green": GREEN, "grey": GREY}[kind], offset)
            )
        elif kind == "garbage":
            records.append(raw_record(image_id.encode(), b"garbage" * 9, offset))
        elif kind == "keyless":
            records.append(raw_record(None, b"garbage", offset))
        else:
            uri = "file:///p/ok.png" if kind == "ref_ok" else "file:///p/missing.png"
            records.append(reference_record(image_id, uri, offset))
    with ThreadPoolExecutor(max_workers=2) as executor:
        outcome = run(records, executor, fetcher=fetcher)
    offsets = sorted(
        [d.source_offset for d in outcome.dead_letters]
        + [int(e.image_id.split("-")[1]) for e in outcome.tag_events]
    )
    assert offsets == list(range(len(kinds)))


def test_tagged_at_comes_from_the_clock(pool: ThreadPoolExecutor) -> None:
    now = datetime(2030, 5, 6, tzinfo=UTC)
    (event,) = run([inline_record("img-1", RED)], pool, clock=lambda: now).tag_events
    assert event.tagged_at == now


def test_an_inline_photo_queued_behind_slow_fetches_is_still_tagged() -> None:
    """One decoding thread, held by a host that hangs: the photo is decoded once the budget ends."""
    records = [
        reference_record("slow", "https://slow.example/a.jpg", offset=0),
        inline_record("img-1", RED, offset=1),
    ]
    with ThreadPoolExecutor(max_workers=1) as one_thread:
        outcome = run(records, one_thread, fetcher=SlowFetcher(), pacing=Pacing(fetch_budget_s=0.2))
    assert [e.image_id for e in outcome.tag_events] == ["img-1"]
    assert [d.reason for d in outcome.dead_letters] == [ReasonCode.REFERENCE_UNREACHABLE]
