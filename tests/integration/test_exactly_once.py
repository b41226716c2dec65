"""Exactly-once mode end to end: each photo answered once under crashes, rebalances and a frozen
broker, as a ``read_committed`` reader sees it (``tests/integration/delivery_faults.py``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.future import Future
from kafka.structs import OffsetAndMetadata, TopicPartition

from client.follow import main as follow_main
from schemas.tag_event import Neighbour, TagEvent
from tests.integration.delivery_faults import FaultRun, answers, freeze_process, run_fault
from tests.integration.private_broker import PrivateBroker
from tests.integration.private_broker import private_broker as start_private_broker
from tests.integration.worker_stack import create_topics, delete_topics, shared_stack
from worker.adapters.kafka import ImageConsumer
from worker.adapters.kafka.transactions import PartitionProducer
from worker.ports import TransactionFailed

pytestmark = pytest.mark.integration

#: Enough for the third worker to start, join and take partitions while photos remain.
PHOTOS = {"third-worker-joins": 400}


def _photos(landmarks_dir: Path, fault: str, skip: int) -> list[Path]:
    return sorted(landmarks_dir.glob("*/*.jpg"))[skip::7][: PHOTOS.get(fault, 160)]


@pytest.fixture
def private_broker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[PrivateBroker]:
    """A broker of its own, so that freezing it cannot disturb the other tests."""
    with start_private_broker(tmp_path / "kafka") as broker:
        yield broker


def _assert_exactly_once(run: FaultRun) -> None:
    assert (run.lost, run.duplicates) == (0, 0), run


@pytest.mark.parametrize("fault", ["kill-and-restart", "kill-one-of-two", "third-worker-joins"])
def test_each_photo_is_answered_once_when(
    fault: str, kafka_bootstrap: str, landmarks_dir: Path, tmp_path: Path
) -> None:
    run = run_fault(
        fault,
        "exactly-once",
        stack=shared_stack(landmarks_dir),
        bootstrap=kafka_bootstrap,
        photos=_photos(landmarks_dir, fault, skip=len(fault)),
        workdir=tmp_path,
    )
    _assert_exactly_once(run)


def test_each_photo_is_answered_once_when_the_broker_freezes_past_the_transaction_timeout(
    private_broker: PrivateBroker, landmarks_dir: Path, tmp_path: Path
) -> None:
    freeze, thaw = freeze_process(private_broker.pid)
    run = run_fault(
        "broker-freeze",
        "exactly-once",
        stack=shared_stack(landmarks_dir),
        bootstrap=private_broker.bootstrap,
        photos=_photos(landmarks_dir, "broker-freeze", skip=5),
        workdir=tmp_path,
        freeze=freeze,
        thaw=thaw,
    )
    _assert_exactly_once(run)


def test_follow_shows_only_committed_events_unless_told_otherwise(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = create_topics(kafka_bootstrap, "follow-isolation", partitions=1)
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"follow-test-{topics[0]}"
    )
    try:
        producer.init_transactions()
        for image_id, commit in (("aborted-photo", False), ("committed-photo", True)):
            record = _tag_event(image_id).to_record()
            producer.begin_transaction()
            producer.send(topics[1], key=record.key, value=record.value)
            producer.flush()
            producer.commit_transaction() if commit else producer.abort_transaction()
    finally:
        producer.close()

    def follow(*extra: str) -> list[str]:
        args = ["--bootstrap-servers", kafka_bootstrap, "--topic", topics[1], "--from-beginning"]
        status = follow_main([*args, "--json", "--timeout", "5", *extra])
        assert status == 0
        return [json.loads(line)["image_id"] for line in capsys.readouterr().out.splitlines()]

    try:
        assert follow() == ["committed-photo"]
        assert follow("--isolation-level", "read_uncommitted") == [
            "aborted-photo",
            "committed-photo",
        ]
    finally:
        delete_topics(kafka_bootstrap, topics)


def _tag_event(image_id: str, neighbours: int = 1) -> TagEvent:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    return TagEvent(
        image_id=image_id,
        landmark=None,
        confidence=0.1,
        neighbours=tuple(
            Neighbour(f"reference-{i:04d}", "taj", "Taj Mahal " * 6, 0.9) for i in range(neighbours)
        ),
        model_version="m1",
        gallery_version="g1",
        worker_id="w1",
        published_at=now,
        tagged_at=now,
        latency_ms=1.0,
    )


def _partition_producer(bootstrap: str, topics: tuple[str, str, str]) -> PartitionProducer:
    """The transactional producer of the images topic's partition 0 for the group
    ``<images topic>-group``, writing to the tags and dead-letter topics."""
    return PartitionProducer(
        bootstrap,
        (topics[0], 0),
        group_id=f"{topics[0]}-group",
        tags_topic=topics[1],
        dead_letter_topic=topics[2],
        client_id="txn-test",
        timeout_s=10.0,
        transaction_timeout_ms=10_000,
    )


def test_a_partitions_producer_commits_outputs_with_the_offset_and_fences_its_predecessor(
    kafka_bootstrap: str,
) -> None:
    topics = create_topics(kafka_bootstrap, "txn-producer", partitions=1)
    group = f"{topics[0]}-group"  # the one _partition_producer commits offsets for

    def producer() -> PartitionProducer:
        return _partition_producer(kafka_bootstrap, topics)

    first = producer()
    try:
        first.commit(5, [_tag_event("photo-1")], [])
        second = producer()  # the partition's next holder
        with pytest.raises(TransactionFailed) as failed:
            first.commit(9, [_tag_event("photo-2")], [])
        assert failed.value.fenced and first.closed
        second.commit(7, [_tag_event("photo-3")], [])
        second.close()

        counts = answers(kafka_bootstrap, topics[1:2], {"photo-1", "photo-3"}, 30, linger_s=1)
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            offsets = admin.list_consumer_group_offsets(group)
        finally:
            admin.close()
        assert dict(counts) == {"photo-1": 1, "photo-3": 1}
        assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {0: 7}
    finally:
        first.close()
        delete_topics(kafka_bootstrap, topics)


def test_a_refused_output_aborts_the_transaction_and_the_producer_goes_on(
    kafka_bootstrap: str,
) -> None:
    """The broker refuses a tag event larger than the topic's ``max.message.bytes``: the
    transaction is aborted (every request answered first), the producer commits the next one."""
    topics = create_topics(kafka_bootstrap, "txn-refused", partitions=1)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topics[1], {"max.message.bytes": "4000"})]
        )
    finally:
        admin.close()
    time.sleep(1.0)  # the broker applies topic configs asynchronously
    producer = _partition_producer(kafka_bootstrap, topics)
    large = _tag_event("large-photo", neighbours=60)
    try:
        with pytest.raises(TransactionFailed) as refused:
            producer.commit(1, [large], [])
        assert not refused.value.producer_closed and not producer.closed
        with pytest.raises(TransactionFailed):
            producer.trial([_tag_event("small-photo"), large], [])
        producer.trial([_tag_event("small-photo")], [])  # taken, then aborted
        producer.commit(2, [_tag_event("small-photo")], [])

        counts = answers(kafka_bootstrap, topics[1:2], {"small-photo"}, 30, linger_s=1)
        assert dict(counts) == {"small-photo": 1}
    finally:
        producer.close()
        delete_topics(kafka_bootstrap, topics)


def test_the_committed_offset_is_asked_afresh_not_taken_from_an_earlier_request(
    kafka_bootstrap: str,
) -> None:
    """kafka-python hands the answer of an earlier, unanswered offset request to the next
    caller; ``ImageConsumer.committed`` must not take it (it may predate a commit)."""
    topics = create_topics(kafka_bootstrap, "committed-afresh", partitions=1)
    group = f"{topics[0]}-group"
    consumer = ImageConsumer(
        kafka_bootstrap, topics[0], group, "test", on_assignment=lambda _: None
    )
    try:
        producer = _partition_producer(kafka_bootstrap, topics)
        producer.commit(3, [_tag_event("photo-1")], [])
        producer.close()
        tp = TopicPartition(topics[0], 0)
        stale = Future().success({tp: OffsetAndMetadata(1, "", -1)})
        pending = consumer._consumer._coordinator._offset_fetch_futures
        pending[frozenset([tp])] = stale
        assert consumer._consumer.committed(tp) == 1  # what kafka-python alone would answer
        pending[frozenset([tp])] = stale
        assert consumer.committed((topics[0], 0), timeout_s=10) == 3
    finally:
        consumer.close()
        delete_topics(kafka_bootstrap, topics)
