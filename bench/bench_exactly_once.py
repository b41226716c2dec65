"""Exactly-once against at-least-once, in one run: duplicates under faults, and throughput.

1. Faults (``tests/integration/delivery_faults.py``): SIGKILL of a worker mid-stream then a
   restart; SIGKILL of one of two workers; a third worker joining mid-stream; the broker frozen
   (``SIGSTOP``, a private broker) for longer than the transaction timeout. Each in both modes on
   fresh topics; a ``read_committed`` reader then counts the outputs of every photo: lost and
   duplicated photos per fault and mode.
2. Throughput: N photos published to a fresh 4-partition topic before one worker starts; its
   photos/s from its first to its last commit (its own ``batch committed`` log lines), the two
   modes alternated ``--rounds`` times. Also the mean time of one partition's transaction
   (``landmark_worker_transaction_seconds{step="commit"}``), from which the cost for a slower
   model follows (it does not depend on the model).
3. Live: the same, with the photos published while the worker runs, so that its batches take
   what has arrived from every partition (one transaction per partition, run at the same time):
   the median time a batch spends publishing and committing, in each mode.

The model and gallery are the integration tests' (MobileNetV2 at 96 px, not fine-tuned: about
4 ms of CPU a photo, so a fixed cost a batch weighs more here than with the 288 px deployment
model). Kafka is the local broker (``deploy/local/kafka.sh``; started if none answers).

    .venv/bin/python bench/bench_exactly_once.py                  # faults + throughput
    .venv/bin/python bench/bench_exactly_once.py --no-faults      # throughput only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from devstack.processes import REPO_ROOT, ensure_local_service
from tests.integration.delivery_faults import FAULTS, freeze_process, run_fault
from tests.integration.private_broker import private_broker
from tests.integration.worker_stack import (
    create_topics,
    delete_topics,
    publish,
    shared_stack,
    worker_on_topics,
)

MODES = ("at-least-once", "exactly-once")
BOOTSTRAP = "127.0.0.1:19092"


def landmarks_dir() -> Path:
    default = REPO_ROOT.parent / "shared" / "data" / "landmarks"
    return Path(os.environ.get("LANDMARK_DATA_DIR", default))


def faults(workdir: Path) -> list[dict[str, object]]:
    stack = shared_stack(landmarks_dir())
    every = sorted(landmarks_dir().glob("*/*.jpg"))
    rows = []
    for fault in FAULTS:
        for mode in MODES:
            photos = every[len(rows) :: 7][: 400 if fault == "third-worker-joins" else 160]
            directory = workdir / f"{fault}-{mode}"
            directory.mkdir(parents=True)
            if fault == "broker-freeze":
                with private_broker(directory / "kafka") as broker:
                    freeze, thaw = freeze_process(broker.pid)
                    run = run_fault(
                        fault,
                        mode,
                        stack=stack,
                        bootstrap=broker.bootstrap,
                        photos=photos,
                        workdir=directory,
                        freeze=freeze,
                        thaw=thaw,
                    )
            else:
                run = run_fault(
                    fault, mode, stack=stack, bootstrap=BOOTSTRAP, photos=photos, workdir=directory
                )
            rows.append(run.__dict__)
            print(f"  {fault:20} {mode:14} lost {run.lost:3}  duplicates {run.duplicates:3}")
    return rows


def throughput(
    workdir: Path, n: int, mode: str, round_no: int, live: bool = False
) -> dict[str, float]:
    """One worker through ``n`` photos: published before it starts (a backlog), or, ``live``,
    while it runs (its batches then take what has arrived, from every partition)."""
    stack = shared_stack(landmarks_dir())
    topics = create_topics(BOOTSTRAP, "eos-bench")
    photos = sorted(landmarks_dir().glob("*/*.jpg"))[round_no::3][:n]
    ids = workdir / f"ids-{mode}-{round_no}-{live}.jsonl"
    try:
        if not live:
            publish(BOOTSTRAP, topics[0], photos, ids)
        log_path = workdir / f"throughput-{mode}-{round_no}-{'live' if live else 'backlog'}.log"
        worker = worker_on_topics(
            stack,
            BOOTSTRAP,
            topics,
            "bench-worker",
            log_path,
            ["--delivery", mode, "--batch-max-records", "32"],
        )
        try:
            if live:
                worker.wait_ready()
                publish(BOOTSTRAP, topics[0], photos, ids)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    if worker.metric("landmark_worker_images_total") >= n:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            txn_sum = worker.metric("landmark_worker_transaction_seconds_sum", {"step": "commit"})
            txn_count = worker.metric(
                "landmark_worker_transaction_seconds_count", {"step": "commit"}
            )
        finally:
            worker.kill()
        return _window(log_path, n) | {
            "publish_commit_ms": _publish_commit_ms(log_path),
            "transactions": txn_count,
            "transaction_ms": 1000 * txn_sum / txn_count if txn_count else 0.0,
        }
    finally:
        delete_topics(BOOTSTRAP, topics)


def _publish_commit_ms(log_path: Path) -> float:
    """Median of a batch's publish + commit time, from the worker's log."""
    times = [
        1000 * (entry["publish_s"] + entry["commit_s"])
        for entry in map(json.loads, _committed_lines(log_path))
    ]
    return statistics.median(times)


def _committed_lines(log_path: Path) -> list[str]:
    lines = log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if '"batch committed"' in line]


def _window(log_path: Path, n: int) -> dict[str, float]:
    """Photos/s from the first batch's start to the last commit, from the worker's log."""
    commits = []
    for line in _committed_lines(log_path):
        entry = json.loads(line)
        at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
        stages = sum(entry.get(k, 0.0) for k in ("decode", "embed", "search", "vote"))
        commits.append((at, at - stages - entry["publish_s"] - entry["commit_s"], entry))
    first_start = min(start for _, start, _ in commits)
    last = max(at for at, _, _ in commits)
    photos = sum(e["records"] for _, _, e in commits)
    return {
        "photos": photos,
        "batches": len(commits),
        "seconds": last - first_start,
        "photos_per_s": photos / (last - first_start),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-faults", action="store_true", help="throughput only")
    parser.add_argument("--n", type=int, default=800, help="photos in each throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="throughput runs of each mode")
    args = parser.parse_args()
    stop_kafka = ensure_local_service("kafka", {"KAFKA_PORT": "19092"})
    workdir = Path(tempfile.mkdtemp(prefix="bench-eos-"))
    try:
        result: dict[str, object] = {}
        if not args.no_faults:
            print("faults (read_committed reader; lost / duplicated photos):")
            result["faults"] = faults(workdir)
        print(f"throughput ({args.n} photos, batch 32, 4 partitions, one worker):")
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
        for round_no in range(args.rounds):
            for mode in MODES:
                run = throughput(workdir, args.n, mode, round_no)
                runs[mode].append(run)
                print(
                    f"  {mode:14} round {round_no}: {run['photos_per_s']:6.1f} photos/s, "
                    f"{run['batches']:.0f} batches, {run['transactions']:.0f} transactions of "
                    f"{run['transaction_ms']:.1f} ms, publish + commit "
                    f"{run['publish_commit_ms']:.1f} ms a batch"
                )
        print("live (photos published while the worker runs; its batches span the partitions):")
        for mode in MODES:
            run = throughput(workdir, args.n, mode, args.rounds, live=True)
            runs[f"{mode} live"] = [run]
            print(
                f"  {mode:14} {run['batches']:.0f} batches, {run['transactions']:.0f} "
                f"transactions, publish + commit {run['publish_commit_ms']:.1f} ms a batch "
                "(median)"
            )
        rates = {m: statistics.median(r["photos_per_s"] for r in runs[m]) for m in MODES}
        ratio = rates["exactly-once"] / rates["at-least-once"]
        print(
            f"median photos/s: at-least-once {rates['at-least-once']:.1f}, exactly-once "
            f"{rates['exactly-once']:.1f} (ratio {ratio:.3f})"
        )
        result["throughput"] = runs
        (workdir / "result.json").write_text(json.dumps(result, indent=2))
        print(f"logs and result.json in {workdir}")
    finally:
        if stop_kafka is not None:
            stop_kafka()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
