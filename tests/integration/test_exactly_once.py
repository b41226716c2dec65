"""Exactly-once mode end to end: each photo answered once under crashes, rebalances and a frozen
broker, as a ``read_committed`` reader sees it (``tests/integration/delivery_faults.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.delivery_faults import FaultRun, freeze_process, run_fault
from tests.integration.private_broker import PrivateBroker
from tests.integration.private_broker import private_broker as start_private_broker
from tests.integration.worker_stack import shared_stack

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
