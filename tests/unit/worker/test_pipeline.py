"""The pipelined loop: stages of consecutive batches overlap, and at-least-once still holds.

Batch n+1 is fetched and decoded while batch n is embedded; batch n is searched, voted and
published while batch n+1 is embedded; the gallery is not refreshed under a search in flight; commits follow the poll order, each after its batch's
acknowledgement; a failure rewinds every batch in flight; a rebalance in the middle loses nothing.
The loop is the real :class:`worker.service.WorkerService` on the in-memory fakes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
from loop_fakes import MemorySource
from test_service import Loop, make_loop, photos
from worker_fakes import RED, DictFetcher, inline_record, photo_bytes, reference_record

from schemas.image_event import decode_image_event
from schemas.kafka_record import KafkaRecord
from schemas.tag_event import Neighbour

WAIT_S = 3.0


def outputs(loop: Loop) -> dict[str, int]:
    """Image id (or dead letter key) → how many times an output for it was acknowledged."""
    counts: dict[str, int] = {}
    for image_id in [e.image_id for e in loop.sink.tag_events] + [
        str(d.original_key) for d in loop.sink.dead_letters
    ]:
        counts[image_id] = counts.get(image_id, 0) + 1
    return counts


def assert_nothing_lost(loop: Loop, records: list[KafkaRecord]) -> None:
    """Every record below the committed offset of its partition has an acknowledged output."""
    done = outputs(loop)
    for record in records:
        committed = loop.source.committed.get((record.topic, record.partition), 0)
        if record.offset < committed:
            assert decode_image_event(record).image_id in done, (record.partition, record.offset)


def two_partitions(count: int) -> list[KafkaRecord]:
    """``count`` red photos in each of partitions 0 and 1 (``p<partition>-<i>``)."""
    return [
        dataclasses.replace(inline_record(f"p{partition}-{i}", RED, offset=i), partition=partition)
        for partition in (0, 1)
        for i in range(count)
    ]


def test_the_next_batch_is_fetched_while_this_one_is_searched(tmp_path: Path) -> None:
    next_fetched = threading.Event()

    class SignallingFetcher(DictFetcher):
        def fetch(self, uri: str) -> bytes:
            next_fetched.set()
            return super().fetch(uri)

    records = [
        inline_record("photo-0", RED, offset=0),
        reference_record("photo-1", "https://img/1.png", offset=1),
    ]
    fetcher = SignallingFetcher({"https://img/1.png": photo_bytes(RED)})
    loop = make_loop(tmp_path, records, batch_max_records=1, fetcher=fetcher)
    search = loop.gallery.search
    seen_during_search: list[bool] = []

    def waiting_search(embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        if not seen_during_search:  # photo-0's search waits for photo-1's fetch
            seen_during_search.append(next_fetched.wait(WAIT_S))
        return search(embeddings, k)

    loop.gallery.search = waiting_search  # type: ignore[method-assign]
    loop.service.run()

    assert seen_during_search == [True]
    assert sorted(outputs(loop)) == ["photo-0", "photo-1"]


def test_a_batch_is_searched_and_published_while_the_next_one_is_embedded(
    tmp_path: Path,
) -> None:
    loop = make_loop(tmp_path, photos(3), batch_max_records=1, reload_check_interval_s=3600)
    embedded: list[int] = []
    second_embedding = threading.Event()
    embed = loop.service._served.model.embed

    def counting_embed(images: np.ndarray) -> np.ndarray:
        embedded.append(len(images))
        if len(embedded) == 2:
            second_embedding.set()
        return embed(images)

    loop.service._served.model.embed = counting_embed  # type: ignore[method-assign]
    search = loop.gallery.search
    seen_during_search: list[bool] = []

    def waiting_search(embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        if not seen_during_search:  # photo-0's search waits for photo-1's embedding
            seen_during_search.append(second_embedding.wait(WAIT_S))
        return search(embeddings, k)

    loop.gallery.search = waiting_search  # type: ignore[method-assign]
    seen_during_publish: list[int] = []
    loop.sink.on_publish = lambda: seen_during_publish.append(len(embedded))

    loop.service.run()

    # photo-0 was searched while photo-1 was embedded, and published after it.
    assert seen_during_search == [True]
    assert seen_during_publish[0] >= 2
    assert loop.journal[:4] == [
        "published photo-0",
        "committed images-0@1",
        "published photo-1",
        "committed images-0@2",
    ]
    assert outputs(loop) == {f"photo-{i}": 1 for i in range(3)}


def test_no_search_runs_while_the_loop_looks_for_a_new_gallery(tmp_path: Path) -> None:
    """A gallery refreshed or switched under a search in flight would answer with the wrong
    collection (or fail): the loop lets the batch being searched finish first."""
    loop = make_loop(tmp_path, photos(6), batch_max_records=1, reload_check_interval_s=0.0)
    searching = threading.Event()
    search = loop.gallery.search

    def slow_search(embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        searching.set()
        try:
            time.sleep(0.05)
            return search(embeddings, k)
        finally:
            searching.clear()

    loop.gallery.search = slow_search  # type: ignore[method-assign]
    refreshes: list[bool] = []
    refresh = loop.gallery.refresh

    def watched_refresh() -> bool:
        refreshes.append(searching.is_set())
        return refresh()

    loop.gallery.refresh = watched_refresh  # type: ignore[method-assign]

    loop.service.run()

    assert len(refreshes) >= 6 and not any(refreshes)
    assert outputs(loop) == {f"photo-{i}": 1 for i in range(6)}


def test_commits_follow_the_poll_order_and_at_most_three_batches_are_in_flight(
    tmp_path: Path,
) -> None:
    loop = make_loop(tmp_path, photos(12), batch_max_records=2)
    in_flight: list[int] = []

    def count() -> None:
        polled = 2 * (loop.source.polls - 1)  # records polled before this poll
        committed = loop.source.committed.get(("images", 0), 0)
        in_flight.append(polled - committed)

    loop.source.on_poll = count
    loop.service.run()

    commits = [line for line in loop.journal if line.startswith("committed")]
    assert commits == [f"committed images-0@{n}" for n in range(2, 13, 2)]
    assert max(in_flight) <= 3 * 2  # never more than three batches polled and not committed
    assert max(in_flight) >= 2 * 2  # and the pipeline did fill
    assert outputs(loop) == {f"photo-{i}": 1 for i in range(12)}


def test_a_failed_search_rewinds_every_batch_in_flight_and_loses_nothing(tmp_path: Path) -> None:
    records = photos(10)
    loop = make_loop(tmp_path, records, batch_max_records=2)
    search = loop.gallery.search
    calls = []

    def failing_third(embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        calls.append(len(embeddings))
        if len(calls) == 3:  # photos 4-5, while 2-3 are published and 6-7 decoded
            raise ConnectionError("milvus gone")
        return search(embeddings, k)

    loop.gallery.search = failing_third  # type: ignore[method-assign]
    committed_at_failure: list[int] = []
    loop.source.on_poll = lambda: committed_at_failure.append(
        loop.source.committed.get(("images", 0), 0)
    )
    loop.service.run()

    assert loop.source.rewinds == 1 and loop.errors("unexpected") == 1
    assert set(outputs(loop)) == {f"photo-{i}" for i in range(10)}
    assert loop.source.committed == {("images", 0): 10}
    assert_nothing_lost(loop, records)
    # Committed offsets never jumped past the failed batch before it was retried.
    commits = [int(line.rsplit("@", 1)[1]) for line in loop.journal if line.startswith("committed")]
    assert commits == sorted(commits)


def test_a_rebalance_in_the_middle_of_the_pipeline_loses_nothing(tmp_path: Path) -> None:
    """Partition 1 is taken away while its batches are in flight, then given back: commits of
    the moved partition are refused, it resumes from its committed offset, every photo gets an
    output, and every offset below a commit has one."""
    records = two_partitions(6)
    loop = make_loop(tmp_path, records, batch_max_records=2)
    source: MemorySource = loop.source
    polls = {"n": 0}

    def rebalance() -> None:
        polls["n"] += 1
        if polls["n"] == 3:
            source.rebalance(frozenset({("images", 0)}))
        if polls["n"] == 5:
            source.rebalance(frozenset({("images", 0), ("images", 1)}))

    source.on_poll = rebalance
    loop.service.run()

    assert set(outputs(loop)) == {r for r in (f"p{p}-{i}" for p in (0, 1) for i in range(6))}
    assert source.committed == {("images", 0): 6, ("images", 1): 6}
    assert_nothing_lost(loop, records)


def test_a_batch_polled_before_a_revocation_is_dropped_not_published_twice(
    tmp_path: Path,
) -> None:
    """At-least-once: when the group revokes the partitions (and gives them back, from the
    committed offsets), the batch still being decoded is dropped, not published; only the one
    already being published is tagged again."""
    records = two_partitions(6)
    loop = make_loop(tmp_path, records, batch_max_records=2)
    source: MemorySource = loop.source
    both = frozenset({("images", 0), ("images", 1)})
    source.on_poll = lambda: source.rebalance(both) if source.polls == 3 else None

    loop.service.run()

    once = {r: 1 for r in (f"p{p}-{i}" for p in (0, 1) for i in range(6))}
    assert outputs(loop) == once | {"p0-0": 2, "p0-1": 2}  # the batch being published
    assert source.committed == {("images", 0): 6, ("images", 1): 6}
    assert loop.errors("batch_revoked") == 1
