"""Faults under which each photo must be answered exactly once (``--delivery exactly-once``).

Each fault runs real ``landmark-worker`` processes against a real Kafka on topics of its own,
publishes photos with ``landmark-publish``, breaks something mid-stream, then reads the tag and
dead-letter topics from the beginning with a ``read_committed`` reader and counts, per image id,
the outputs it sees. The tests run the faults in exactly-once mode (no duplicate, nothing
lost); ``bench/bench_exactly_once.py`` runs them in both modes for the comparison.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.integration.worker_stack import (
    Stack,
    WorkerProcess,
    create_topics,
    delete_topics,
    publish,
    read_outputs,
    worker_on_topics,
)

FAULTS = ("kill-and-restart", "kill-one-of-two", "broker-freeze", "third-worker-joins")
#: Worker flags of every fault run: small batches, so that a batch is always in flight.
RUN_ARGS = ("--batch-max-records", "4", "--publish-timeout-s", "3", "--backoff-max-s", "2")
FREEZE_S = 12.0
#: A transaction left open by the freeze outlives this (exactly-once mode).
FREEZE_TRANSACTION_TIMEOUT_MS = 5000
#: third-worker-joins: the photos are published in this many parts over this many seconds,
#: longer than a worker takes to start and join.
PACED_CHUNKS, PACED_S = 20, 16.0


@dataclass(frozen=True)
class FaultRun:
    """What a ``read_committed`` reader saw after one fault.

    Attributes:
        fault: Which fault.
        mode: ``at-least-once`` or ``exactly-once``.
        published: Photos published.
        lost: Published photos without any output.
        duplicates: Outputs beyond the first for the same photo.
        seconds: From the first publish until every photo was answered.
        repeated: Where the outputs of duplicated photos are (for the failure message).
    """

    fault: str
    mode: str
    published: int
    lost: int
    duplicates: int
    seconds: float
    repeated: tuple[str, ...] = ()


def run_fault(
    fault: str,
    mode: str,
    *,
    stack: Stack,
    bootstrap: str,
    photos: Sequence[Path],
    workdir: Path,
    freeze: Callable[[], None] | None = None,
    thaw: Callable[[], None] | None = None,
) -> FaultRun:
    """Run ``fault`` with workers in ``mode``; ``freeze``/``thaw`` stop and restart the broker
    (``broker-freeze`` only: a private broker, see ``tests/integration/private_broker.py``)."""
    topics = create_topics(bootstrap, f"eos-{fault}", partitions=4)
    extra = [*RUN_ARGS, "--delivery", mode]
    if fault == "broker-freeze" and mode == "exactly-once":
        extra += ["--transaction-timeout-ms", str(FREEZE_TRANSACTION_TIMEOUT_MS)]

    def start(name: str) -> WorkerProcess:
        return worker_on_topics(
            stack, bootstrap, topics, f"worker-{name}", workdir / f"{fault}-{name}.log", extra
        )

    workers: list[WorkerProcess] = []
    try:
        count = 1 if fault in ("kill-and-restart", "broker-freeze") else 2
        workers += [start(name) for name in "ab"[:count]]
        for worker in workers:
            worker.wait_ready()
        started = time.monotonic()
        victim = workers[0]
        if fault == "third-worker-joins":
            # The photos trickle in while the third worker starts (seconds: it loads the model),
            # so that it joins while the first two work through them, whatever their speed.
            with ThreadPoolExecutor(1) as publisher:
                paced = publisher.submit(_publish_paced, bootstrap, topics[0], photos, workdir)
                _wait_for_progress(victim)
                workers.append(start("c"))
                _wait_for_line(workers[2], "partitions assigned")
                ids = paced.result()
        else:
            published = publish(bootstrap, topics[0], photos, workdir / "ids.jsonl")
            ids = [p["image_id"] for p in published]
            _wait_for_progress(victim)
        if fault == "kill-and-restart":
            victim.kill()
            workers.append(start("a-again"))
        elif fault == "kill-one-of-two":
            victim.kill()
        elif fault == "broker-freeze":
            assert freeze is not None and thaw is not None
            freeze()
            time.sleep(FREEZE_S)
            thaw()
        seen: dict[str, list[str]] = {}
        counts = answers(bootstrap, topics[1:], set(ids), timeout_s=240, where=seen)
        seconds = time.monotonic() - started
        if fault == "third-worker-joins":  # it joined while the first two were committing
            assert any(_revoked_mid_stream(w) for w in workers[:2]), workers[0].log()
        return FaultRun(
            fault=fault,
            mode=mode,
            published=len(ids),
            lost=sum(1 for i in ids if counts[i] == 0),
            duplicates=sum(max(0, n - 1) for n in counts.values()),
            seconds=seconds,
            repeated=tuple(f"{i}: {seen[i]}" for i, n in counts.items() if n > 1),
        )
    finally:
        for worker in workers:
            worker.kill()
        delete_topics(bootstrap, topics)


def _revoked_mid_stream(worker: WorkerProcess) -> bool:
    """Whether the worker had partitions revoked between two of its commits."""
    events = []
    for line in worker.log_path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line).get("event"))
        except ValueError:  # a library's plain line, or the line being written
            continue
    commits = [i for i, event in enumerate(events) if event == "batch committed"]
    revoked = [i for i, event in enumerate(events) if event == "partitions revoked"]
    return bool(commits) and any(commits[0] < i < commits[-1] for i in revoked)


def _publish_paced(bootstrap: str, topic: str, photos: Sequence[Path], workdir: Path) -> list[str]:
    """Publish ``photos`` in PACED_CHUNKS parts over PACED_S seconds; their image ids."""
    ids: list[str] = []
    size = -(-len(photos) // PACED_CHUNKS)
    for part, first in enumerate(range(0, len(photos), size)):
        id_map = workdir / f"ids-{part}.jsonl"
        ids += [
            p["image_id"] for p in publish(bootstrap, topic, photos[first : first + size], id_map)
        ]
        time.sleep(PACED_S / PACED_CHUNKS)
    return ids


def _wait_for_line(worker: WorkerProcess, text: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in worker.log_path.read_text(errors="replace"):
        assert worker.process.poll() is None, worker.log()
        assert time.monotonic() < deadline, f"no {text!r} in {timeout_s} s:\n{worker.log()}"
        time.sleep(0.05)


def _wait_for_progress(worker: WorkerProcess, timeout_s: float = 120.0) -> None:
    """Until the worker has committed some photos (the fault then hits a stream in motion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.process.poll() is None, worker.log()
        try:
            if worker.metric("landmark_worker_images_total") > 0:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"the worker answered nothing in {timeout_s} s:\n{worker.log()}")


def answers(
    bootstrap: str,
    topics: Sequence[str],
    ids: set[str],
    timeout_s: float,
    linger_s: float = 5.0,
    where: dict[str, list[str]] | None = None,
) -> Counter[str]:
    """Outputs per image id that a ``read_committed`` reader sees on ``topics``.

    Reads from the beginning until every id is answered (or ``timeout_s``), then ``linger_s``
    more, so that a late duplicate is counted too. ``where`` gets, per id, the worker and time
    of each of its outputs.
    """
    outputs: list[dict[str, str]] = []

    def answered(values: dict[str, list[bytes]]) -> bool:
        outputs[:] = [json.loads(v) for topic in topics for v in values[topic]]
        seen = {o.get("image_id") or o.get("original_key") for o in outputs}
        return ids <= seen

    values = read_outputs(
        bootstrap,
        topics,
        expected=10**9,
        timeout_s=timeout_s,
        until=answered,
        linger_s=linger_s,
        isolation_level="read_committed",
    )
    answered(values)
    counts: Counter[str] = Counter()
    for output in outputs:
        key = output.get("image_id") or output.get("original_key")
        counts[key] += 1
        if where is not None:
            when = output.get("tagged_at") or output.get("failed_at")
            where.setdefault(key, []).append(f"{output.get('worker_id')} {when}")
    return counts


def freeze_process(pid: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """``SIGSTOP``/``SIGCONT`` of a broker process."""
    return (lambda: os.kill(pid, signal.SIGSTOP)), (lambda: os.kill(pid, signal.SIGCONT))
