"""The worker loop's contract, driven with an in-memory source, sink, model and gallery."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from kafka.errors import KafkaError, KafkaTimeoutError
from loop_fakes import (
    ColourGallery,
    ColourModel,
    MemorySink,
    MemorySource,
    SlowFetcher,
    colour_manifest,
)
from structlog.testing import capture_logs
from worker_fakes import (
    BLUE,
    GREEN,
    PUBLISHED_AT,
    RED,
    DictFetcher,
    inline_record,
    reference_record,
)

from schemas.errors import ReasonCode
from schemas.kafka_record import KafkaRecord
from schemas.tag_event import Neighbour
from worker.observability.health import HealthState, ReadinessLimits
from worker.observability.metrics import WorkerMetrics
from worker.ports import Gallery, PhotoFetcher, ServedModel
from worker.service import WorkerService
from worker.settings import LoopSettings

BACKING_OFF = "backing off after publish_failed"


@dataclass
class Loop:
    """A service wired to fakes, and the fakes to look at afterwards."""

    service: WorkerService
    source: MemorySource
    sink: MemorySink
    gallery: ColourGallery
    metrics: WorkerMetrics
    health: HealthState
    journal: list[str]

    def errors(self, kind: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "landmark_worker_errors_total", {"kind": kind}
        )
        return value or 0.0

    def blocked(self) -> object:
        return self.health.readiness()[1]["blocked"]


def unexpected_model(directory: Path) -> ServedModel:
    raise AssertionError(f"no model export expected in {directory}")


def unexpected_gallery() -> Gallery:
    raise AssertionError("no gallery switch expected")


def make_loop(
    model_dir: Path,
    records: list[KafkaRecord],
    *,
    batch_max_records: int = 8,
    sink_failures: int = 0,
    isolate_after_failures: int = 3,
    fetcher: PhotoFetcher | None = None,
    max_poll_interval_s: float = 300.0,
    readiness: ReadinessLimits | None = None,
    load_model: Callable[[Path], ServedModel] = unexpected_model,
    open_gallery: Callable[[], Gallery] = unexpected_gallery,
    reload_check_interval_s: float = 0.0,
) -> Loop:
    """A loop that stops once its source has nothing left to read and nothing is in flight;
    backoff pauses of ms; it looks for a new gallery or model every ``reload_check_interval_s``
    (every turn by default: it then waits for the batch being searched, see test_pipeline)."""
    journal: list[str] = []
    source = MemorySource(records, journal)
    sink = MemorySink(journal, failures=sink_failures)
    gallery = ColourGallery(journal, model_version="model-a", gallery_version="gallery-1")
    metrics, health = WorkerMetrics(), HealthState(limits=readiness)
    health.set_partitions(frozenset({("images", 0)}))  # what the consumer's assignment sets
    settings = LoopSettings(
        worker_id="worker-1",
        model_dir=model_dir,
        batch_max_records=batch_max_records,
        batch_max_wait_ms=0,
        decode_threads=1,
        backoff_initial_s=0.001,
        backoff_max_s=0.004,
        reload_check_interval_s=reload_check_interval_s,
        isolate_after_failures=isolate_after_failures,
        max_poll_interval_s=max_poll_interval_s,
    )
    service = WorkerService(
        settings,
        model=ColourModel("model-a"),
        gallery=gallery,
        source=source,
        sink=sink,
        fetcher=fetcher if fetcher is not None else DictFetcher({}),
        metrics=metrics,
        health=health,
        load_model=load_model,
        open_gallery=open_gallery,
        clock=lambda: PUBLISHED_AT + timedelta(milliseconds=250),
    )
    # Stop once a poll finds nothing and no batch is in flight any more.
    source.on_idle = lambda: service.stop() if service.idle else None
    return Loop(service, source, sink, gallery, metrics, health, journal)


def photos(count: int) -> list[KafkaRecord]:
    colours = (RED, GREEN, BLUE)
    return [inline_record(f"photo-{i}", colours[i % 3], offset=i) for i in range(count)]


def test_offsets_are_committed_only_after_the_publish_is_acknowledged(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, photos(2))

    loop.service.run()

    assert loop.journal[:2] == ["published photo-0 photo-1", "committed images-0@2"]


def test_a_failed_publish_is_rewound_and_published_and_committed_later(tmp_path: Path) -> None:
    """Nothing is committed while the publish fails; the retried batch loses no photo."""
    loop = make_loop(tmp_path, photos(2), sink_failures=2)

    loop.service.run()

    assert loop.sink.attempts == [["photo-0", "photo-1"]] * 3
    assert loop.source.rewinds == 2
    assert [e.image_id for e in loop.sink.tag_events] == ["photo-0", "photo-1"]
    assert loop.journal[:2] == ["published photo-0 photo-1", "committed images-0@2"]
    assert loop.errors("publish_failed") == 2


def test_pauses_after_failed_batches_double_up_to_the_maximum(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, photos(1), sink_failures=4, isolate_after_failures=10)

    with capture_logs() as logs:
        loop.service.run()

    pauses = [e["pause_s"] for e in logs if e["event"].startswith("batch not committed")]
    assert pauses == [0.001, 0.002, 0.004, 0.004]


def test_readiness_is_blocked_while_backing_off_and_unblocked_after_a_success(
    tmp_path: Path,
) -> None:
    loop = make_loop(tmp_path, photos(1), sink_failures=1)
    at_publish: list[object] = []
    at_poll: list[object] = []
    loop.sink.on_publish = lambda: at_publish.append(loop.blocked())
    loop.source.on_poll = lambda: at_poll.append(loop.blocked())

    loop.service.run()

    assert at_publish == [None, BACKING_OFF]
    # Polls go on while the batch is in the pipeline: blocked from the failure to the success.
    assert at_poll[0] is None and at_poll[-1] is None
    first = at_poll.index(BACKING_OFF)
    assert set(at_poll[first : at_poll.index(None, first)]) == {BACKING_OFF}


def test_a_commit_refused_after_a_rebalance_is_counted_and_not_retried(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, photos(2))
    # The group takes the partition away while the batch is being published.
    loop.sink.on_publish = lambda: loop.source.rebalance(frozenset())

    loop.service.run()

    assert loop.errors("commit_failed") == 1
    assert loop.sink.attempts == [["photo-0", "photo-1"]]
    assert loop.source.committed == {}
    assert loop.source.rewinds == 0
    assert loop.errors("publish_failed") == 0


def test_a_new_model_is_not_served_while_the_gallery_is_built_with_the_old_one(
    tmp_path: Path,
) -> None:
    colour_manifest("model-b").write(tmp_path)
    loaded: list[Path] = []
    opened: list[ColourGallery] = []

    def load_model(directory: Path) -> ServedModel:
        loaded.append(directory)
        return ColourModel("model-b")

    def open_gallery() -> Gallery:
        opened.append(ColourGallery([], model_version="model-a", gallery_version="gallery-1"))
        return opened[-1]

    loop = make_loop(tmp_path, photos(1), load_model=load_model, open_gallery=open_gallery)

    loop.service.run()

    assert [e.model_version for e in loop.sink.tag_events] == ["model-a"]
    assert loaded == [tmp_path]
    assert opened and all(g.closed for g in opened)
    assert loop.service.model_version == "model-a"


def test_a_new_model_is_switched_to_once_its_gallery_is_compatible(tmp_path: Path) -> None:
    colour_manifest("model-b").write(tmp_path)
    alias = {"model_version": "model-a", "gallery_version": "gallery-1"}

    def open_gallery() -> Gallery:
        return ColourGallery([], **alias)

    def gallery_for_model_b_is_loaded() -> None:
        alias.update(model_version="model-b", gallery_version="gallery-2")

    loop = make_loop(
        tmp_path,
        photos(2),
        batch_max_records=1,
        load_model=lambda _directory: ColourModel("model-b"),
        open_gallery=open_gallery,
    )
    loop.sink.on_publish = gallery_for_model_b_is_loaded

    loop.service.run()

    served = [(e.image_id, e.model_version, e.gallery_version) for e in loop.sink.tag_events]
    assert served == [("photo-0", "model-a", "gallery-1"), ("photo-1", "model-b", "gallery-2")]
    assert loop.gallery.closed
    versions = {"model_version": "model-b", "gallery_version": "gallery-2", "worker_id": "worker-1"}
    assert loop.metrics.registry.get_sample_value("landmark_worker_model_info", versions) == 1.0


def test_stop_finishes_the_batches_in_flight_then_closes_sink_source_and_gallery(
    tmp_path: Path,
) -> None:
    """Stopping while photo-0 is published: photo-1, polled and decoded meanwhile, is finished,
    published and committed too; photo-2 is never polled."""
    loop = make_loop(tmp_path, photos(3), batch_max_records=1)
    loop.sink.on_publish = loop.service.stop

    loop.service.run()

    assert loop.journal == [
        "published photo-0",
        "committed images-0@1",
        "published photo-1",
        "committed images-0@2",
        "sink closed",
        "source closed",
        "gallery-1 closed",
    ]
    assert loop.source.polls == 2


def test_an_error_while_polling_ends_the_run_after_closing_sink_source_and_gallery(
    tmp_path: Path,
) -> None:
    loop = make_loop(tmp_path, photos(1))
    loop.source.poll_errors.append(KafkaError("broker gone"))

    with pytest.raises(KafkaError):
        loop.service.run()

    assert loop.journal == ["sink closed", "source closed", "gallery-1 closed"]


def _answered(loop: Loop) -> Counter[str | None]:
    return Counter(
        [e.image_id for e in loop.sink.tag_events]
        + [d.original_key for d in loop.sink.dead_letters]
    )


def test_a_record_whose_output_is_always_refused_is_isolated_as_a_minimal_dead_letter(
    tmp_path: Path,
) -> None:
    """The batch is split until photo-5 stands alone; the other seven are published once each."""
    loop = make_loop(tmp_path, photos(8))
    loop.sink.refuse = "photo-5"

    loop.service.run()

    assert _answered(loop) == Counter(f"photo-{i}" for i in range(8))
    (letter,) = loop.sink.dead_letters
    assert (letter.original_key, letter.reason) == ("photo-5", ReasonCode.OUTPUT_REFUSED)
    assert (letter.original_headers, letter.value_base64) == ({}, None)
    assert loop.source.committed == {("images", 0): 8}
    assert loop.errors("output_refused") == 1


def test_a_refusal_that_looks_like_an_outage_is_isolated_after_three_failures_in_a_row(
    tmp_path: Path,
) -> None:
    loop = make_loop(tmp_path, photos(4))
    loop.sink.refuse = "photo-2"
    loop.sink.refuse_with = KafkaTimeoutError()

    loop.service.run()

    assert loop.source.rewinds == 2
    assert [d.original_key for d in loop.sink.dead_letters] == ["photo-2"]
    assert _answered(loop) == Counter(f"photo-{i}" for i in range(4))


def test_a_refused_stand_in_is_logged_as_an_error_and_the_batch_retried_not_dropped(
    tmp_path: Path,
) -> None:
    loop = make_loop(tmp_path, photos(2))
    loop.sink.refuse = "photo-0"
    loop.sink.refuse_stand_ins = True

    def broker_takes_it_again() -> None:
        if len(loop.sink.attempts) > 8:
            loop.sink.refuse = None

    loop.sink.on_publish = broker_takes_it_again

    with capture_logs() as logs:
        loop.service.run()

    assert any(e["log_level"] == "error" for e in logs)
    assert [e.image_id for e in loop.sink.tag_events][-2:] == ["photo-0", "photo-1"]
    assert loop.sink.dead_letters == []
    assert loop.source.committed == {("images", 0): 2}


def _around_a_slow_reference() -> list[KafkaRecord]:
    return [
        inline_record("photo-0", RED, offset=0),
        reference_record("slow", "https://slow.example/p.jpg", offset=1),
        inline_record("photo-2", BLUE, offset=2),
    ]


def test_a_reference_not_fetched_within_the_fetch_budget_is_unreachable_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    """Budget: a quarter of the poll interval (0.3 s here); the host would hang for 5 s."""
    loop = make_loop(
        tmp_path, _around_a_slow_reference(), fetcher=SlowFetcher(), max_poll_interval_s=1.2
    )

    started = time.monotonic()
    loop.service.run()

    assert time.monotonic() - started < 2.5
    assert [e.image_id for e in loop.sink.tag_events] == ["photo-0", "photo-2"]
    (letter,) = loop.sink.dead_letters
    assert (letter.original_key, letter.reason) == ("slow", ReasonCode.REFERENCE_UNREACHABLE)
    assert "fetch budget" in letter.message
    assert loop.source.committed == {("images", 0): 3}


def test_stop_during_a_slow_fetch_gives_the_batch_up_at_once_uncommitted(tmp_path: Path) -> None:
    fetcher = SlowFetcher()
    loop = make_loop(tmp_path, _around_a_slow_reference(), fetcher=fetcher)
    running = threading.Thread(target=loop.service.run)
    running.start()
    assert fetcher.started.wait(5)

    stopped = time.monotonic()
    loop.service.stop()
    running.join(timeout=5)

    assert not running.is_alive()
    assert time.monotonic() - stopped < 1.5
    assert loop.journal == ["sink closed", "source closed", "gallery-1 closed"]


def _readiness_now(loop: Loop) -> tuple[bool, object]:
    ok, detail = loop.health.readiness()
    return ok, detail["not_ready_because"]


def test_readiness_fails_while_a_search_hangs_and_comes_back_after(tmp_path: Path) -> None:
    """A frozen Milvus: the loop still beats, but the search stage outlasts its bound."""
    loop = make_loop(
        tmp_path, photos(1), readiness=ReadinessLimits(stage_within_s=0.1, loop_within_s=60)
    )
    searching, thawed = threading.Event(), threading.Event()
    search = loop.gallery.search

    def frozen_search(embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        searching.set()
        thawed.wait(5)
        return search(embeddings, k)

    loop.gallery.search = frozen_search  # type: ignore[method-assign]
    at_publish: list[tuple[bool, object]] = []
    loop.sink.on_publish = lambda: at_publish.append(_readiness_now(loop))
    running = threading.Thread(target=loop.service.run)
    running.start()
    assert searching.wait(5)
    time.sleep(0.3)

    during = _readiness_now(loop)
    thawed.set()
    running.join(5)

    assert during[0] is False and any("stage search" in r for r in during[1])  # type: ignore[attr-defined]
    assert at_publish == [(True, [])]


def test_a_failed_search_marks_milvus_failing(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, photos(1))
    search = loop.gallery.search
    failures = [ConnectionError("milvus gone")]

    def failing_once(embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        if failures:
            raise failures.pop()
        return search(embeddings, k)

    loop.gallery.search = failing_once  # type: ignore[method-assign]
    at_poll: list[object] = []
    loop.source.on_poll = lambda: at_poll.append(loop.health.readiness()[1]["failing"])

    loop.service.run()

    # Marked from the failed search until a search succeeds (the retried batch's).
    assert at_poll[0] == {} and {"milvus": "unexpected"} in at_poll and at_poll[-1] == {}


def test_readiness_fails_while_the_broker_is_silent_and_it_is_counted_once(
    tmp_path: Path,
) -> None:
    loop = make_loop(tmp_path, [])
    loop.source.reachable = False
    polls: list[tuple[bool, object]] = []

    def idle_a_few_times() -> None:
        polls.append(_readiness_now(loop))
        if len(polls) == 3:
            loop.service.stop()

    loop.source.on_poll = idle_a_few_times

    loop.service.run()

    assert polls[-1] == (False, ["kafka failing (the group coordinator does not answer)"])
    assert loop.errors("kafka_silent") == 1


def test_an_outage_while_isolating_gives_no_photo_a_stand_in(tmp_path: Path) -> None:
    """Every part refused as in an outage: nothing is judged poison, the batch is retried."""
    loop = make_loop(tmp_path, photos(2), sink_failures=6)

    loop.service.run()

    assert loop.sink.dead_letters == []
    assert _answered(loop) == Counter(["photo-0", "photo-1"])
    assert loop.errors("output_refused") == 0
