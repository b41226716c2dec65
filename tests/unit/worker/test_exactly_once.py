"""Exactly-once delivery in the real loop, on in-memory transactions (``transaction_fakes``).

What a ``read_committed`` reader would see (``TransactionLog.visible``) must hold each photo
once, whatever fails: a transaction of one partition after another's committed, a commit whose
answer is lost, a rebalance with batches in flight, a fenced producer, a refused output.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from loop_fakes import ColourGallery, ColourModel
from test_service import unexpected_gallery, unexpected_model
from transaction_fakes import GroupSource, TransactionLog
from worker_fakes import BLUE, GREEN, PUBLISHED_AT, RED, DictFetcher, inline_record

from schemas.kafka_record import KafkaRecord
from worker.delivery.exactly_once import ExactlyOnce
from worker.observability.health import HealthState
from worker.observability.metrics import WorkerMetrics
from worker.service import WorkerService
from worker.settings import LoopSettings


@dataclass
class Rig:
    service: WorkerService
    source: GroupSource
    log: TransactionLog
    delivery: ExactlyOnce
    metrics: WorkerMetrics
    health: HealthState

    def transactions(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "landmark_worker_transactions_total", {"result": result}
        )
        return value or 0.0


def records(partitions: int, per_partition: int) -> list[KafkaRecord]:
    colours = (RED, GREEN, BLUE)
    out = []
    for p in range(partitions):
        for offset in range(per_partition):
            base = inline_record(f"p{p}-{offset}", colours[offset % 3], offset=offset)
            out.append(replace(base, partition=p))
    return out


def make_rig(tmp_path: Path, topic: list[KafkaRecord], batch: int = 4) -> Rig:
    journal: list[str] = []
    log = TransactionLog()
    source = GroupSource(topic, journal, log)
    metrics, health = WorkerMetrics(), HealthState()
    delivery = ExactlyOnce(
        source,
        log.open,
        health=health,
        metrics=metrics,
        worker_id="worker-1",
        isolate_after_failures=3,
        isolation_budget_s=5.0,
        offset_timeout_s=1.0,
        retry_initial_s=0.0,
        retry_max_s=0.0,
        clock=lambda: PUBLISHED_AT,
    )
    service = WorkerService(
        LoopSettings(
            worker_id="worker-1",
            model_dir=tmp_path,
            batch_max_records=batch,
            batch_max_wait_ms=0,
            decode_threads=1,
            backoff_initial_s=0.001,
            backoff_max_s=0.002,
            reload_check_interval_s=0.0,
        ),
        model=ColourModel("model-a"),
        gallery=ColourGallery([], model_version="model-a", gallery_version="gallery-1"),
        source=source,
        sink=None,
        delivery=delivery,
        fetcher=DictFetcher({}),
        metrics=metrics,
        health=health,
        load_model=unexpected_model,
        open_gallery=unexpected_gallery,
        clock=lambda: PUBLISHED_AT + timedelta(milliseconds=250),
    )

    def stop_when_done() -> None:
        if service.idle and not delivery.unready:
            service.stop()

    source.on_idle = stop_when_done
    return Rig(service, source, log, delivery, metrics, health)


def assert_each_once(rig: Rig, topic: list[KafkaRecord]) -> None:
    counts = Counter(rig.log.visible)
    ids = {r.key.decode() for r in topic if r.key is not None}
    assert set(counts) == ids
    assert [i for i, n in counts.items() if n > 1] == []
    ends = {(r.topic, r.partition): r.offset + 1 for r in topic}
    assert rig.log.offsets == ends


def test_each_partition_commits_its_outputs_and_offset_together(tmp_path: Path) -> None:
    topic = records(partitions=2, per_partition=6)
    rig = make_rig(tmp_path, topic)

    rig.service.run()

    assert_each_once(rig, topic)
    assert rig.transactions("committed") >= 4  # batches of 4 over two partitions
    assert rig.log.opened == [("images", 0), ("images", 1)]


def test_a_partition_that_committed_is_not_published_again_when_another_fails(
    tmp_path: Path,
) -> None:
    topic = records(partitions=2, per_partition=6)
    rig = make_rig(tmp_path, topic, batch=12)  # one batch: partition 0 commits, 1 fails
    rig.log.failures[("images", 1)] = ["in_doubt"]

    rig.service.run()

    assert_each_once(rig, topic)
    assert rig.transactions("in_doubt") == 1
    assert rig.log.visible[:6] == [f"p0-{i}" for i in range(6)]


def test_a_commit_whose_answer_is_lost_is_resolved_by_the_next_producer(tmp_path: Path) -> None:
    topic = records(partitions=1, per_partition=8)
    rig = make_rig(tmp_path, topic)
    rig.log.failures[("images", 0)] = ["in_doubt_done", "in_doubt"]

    rig.service.run()

    assert_each_once(rig, topic)
    assert rig.transactions("in_doubt") == 2
    assert rig.log.opened == [("images", 0)] * 3  # a new producer after each unknown outcome


def test_batches_polled_before_a_revocation_are_dropped_and_read_again(tmp_path: Path) -> None:
    topic = records(partitions=2, per_partition=12)
    rig = make_rig(tmp_path, topic, batch=2)
    rig.source.revoke_at_poll = 4  # three batches in flight
    rig.source.reassign = frozenset({("images", 0), ("images", 1)})

    rig.service.run()

    assert_each_once(rig, topic)
    assert rig.log.opened.count(("images", 0)) == 2  # closed on revocation, opened again
    dropped = rig.metrics.registry.get_sample_value(
        "landmark_worker_errors_total", {"kind": "batch_revoked"}
    )
    assert dropped and dropped >= 1


def test_a_partition_moved_away_is_left_to_its_new_holder(tmp_path: Path) -> None:
    topic = records(partitions=2, per_partition=12)
    topic = [r for r in topic if r.partition == 1 or r.offset < 2]  # partition 0: 2 photos
    rig = make_rig(tmp_path, topic, batch=2)
    rig.source.revoke_at_poll = 5  # batches of partition 1 in flight
    rig.source.reassign = frozenset({("images", 0)})

    rig.service.run()

    visible = Counter(rig.log.visible)
    assert [i for i, n in visible.items() if n > 1] == []
    assert {"p0-0", "p0-1"} <= set(visible)
    # partition 1: what was committed before the revocation, nothing after (its new holder's)
    moved = [i for i in visible if i.startswith("p1-")]
    assert 0 < rig.log.offsets[("images", 1)] == len(moved) < 12


def test_a_fenced_producer_is_not_replaced_until_the_group_assigns_again(tmp_path: Path) -> None:
    topic = records(partitions=1, per_partition=8)
    rig = make_rig(tmp_path, topic)
    rejoined: list[int] = []

    def rejoin() -> None:  # the group answers with the same partition
        rejoined.append(1)
        rig.source.revoke_at_poll = rig.source.polls + 1
        rig.source.reassign = frozenset({("images", 0)})

    rig.source.request_rejoin = rejoin  # type: ignore[method-assign]
    rig.log.failures[("images", 0)] = ["fenced"]

    rig.service.run()

    assert rejoined == [1]
    assert_each_once(rig, topic)
    assert rig.transactions("fenced") == 1
    assert rig.log.opened == [("images", 0)] * 2


def test_an_aborted_transaction_is_tried_again_at_once(tmp_path: Path) -> None:
    topic = records(partitions=1, per_partition=4)
    rig = make_rig(tmp_path, topic)
    rig.log.failures[("images", 0)] = ["abort"]

    rig.service.run()

    assert_each_once(rig, topic)
    assert rig.transactions("aborted") == 1
    assert rig.log.trials == 1  # the whole part, as a trial: it went through, so committed


def test_a_refused_output_is_found_with_aborted_trials_and_dead_lettered(tmp_path: Path) -> None:
    topic = records(partitions=1, per_partition=8)
    rig = make_rig(tmp_path, topic)
    rig.log.refuse = "p0-5"

    rig.service.run()

    assert_each_once(rig, topic)
    assert rig.log.trials > 0
    assert rig.transactions("aborted") >= 1
    refused = rig.metrics.registry.get_sample_value(
        "landmark_worker_errors_total", {"kind": "output_refused"}
    )
    assert refused == 1


def test_a_partition_whose_producer_cannot_be_opened_waits_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    topic = records(partitions=2, per_partition=6)
    rig = make_rig(tmp_path, topic)
    rig.log.open_failures[("images", 0)] = 3
    readiness: list[object] = []
    rig.source.on_poll = lambda: readiness.append(
        rig.health.readiness()[1].get("not_ready_because")
    )

    rig.service.run()

    assert_each_once(rig, topic)
    not_ready = rig.metrics.registry.get_sample_value(
        "landmark_worker_errors_total", {"kind": "partition_not_ready"}
    )
    assert not_ready == 3
    first_visible = rig.log.visible[0]
    assert first_visible.startswith("p1-")  # partition 1 went on while 0 waited
    # /readyz says so while partition 0 waits, and is ready again once it is read
    assert any("kafka" in str(reason) for reason in readiness[:3])
    assert "kafka" not in str(readiness[-1])


def test_a_stop_commits_the_decoded_batches_and_closes_the_producers(tmp_path: Path) -> None:
    topic = records(partitions=2, per_partition=12)
    rig = make_rig(tmp_path, topic, batch=2)
    rig.source.on_poll = lambda: rig.service.stop() if rig.source.polls == 4 else None
    opened: list[object] = []
    open_producer = rig.log.open

    def keep(partition: tuple[str, int]) -> object:
        producer = open_producer(partition)
        opened.append(producer)
        return producer

    rig.delivery._open_producer = keep  # type: ignore[assignment]
    polled: list[int] = []
    poll = rig.source.poll_batch

    def counting_poll(max_records: int, max_wait_ms: int) -> list[KafkaRecord]:
        batch = poll(max_records, max_wait_ms)
        polled.append(len(batch))
        return batch

    rig.source.poll_batch = counting_poll  # type: ignore[method-assign]

    rig.service.run()

    visible = Counter(rig.log.visible)
    assert [i for i, n in visible.items() if n > 1] == []
    # every batch polled before the stop was finished and committed, and nothing else
    assert sum(rig.log.offsets.values()) == len(visible) == sum(polled) >= 6
    assert opened and all(p.closed for p in opened)  # type: ignore[attr-defined]
