"""Benchmark the worker end to end against the bare model, on the same machine, in one run.

1. Bare: the same model export (:class:`worker.adapters.keras_embedder.KerasEmbedder`, the worker's own adapter)
   embeds already-decoded ``uint8`` photos in batches of the worker's batch size; images/s with
   the warm-up excluded. Measured before *and* after each end-to-end round, so that a change of
   load on a shared machine shows up as a gap between the two. Decoding alone (the shared
   preprocessing function, one thread and a pool of the worker's decode threads) is timed too.
2. End to end: N landmark photos are published inline to a fresh topic (4 partitions) *before*
   the worker starts; then ``landmark-worker`` (real Kafka, a Milvus Lite server holding a
   reference gallery, the model) consumes them. Its throughput is taken from its own records: the
   window runs from the start of its first batch (the first ``batch committed`` log line's time
   minus that batch's stage times) to its last commit, and the per-stage seconds come from its
   Prometheus histograms ``landmark_worker_stage_seconds``. Group join and model load are outside
   the window; polling between batches is inside it (it is the worker's own overhead).
   The end-to-end part runs ``--rounds`` times (3 by default; a fresh topic and group each), each
   round between the bare runs just before and after it.
3. Printed: bare images/s, end-to-end images/s, their ratio, the stage breakdown (seconds, share of
   the window, ms a photo) and decoding throughput, for the round whose worker CPU overhead is the
   median; a line a round; last, the two CPU overheads, each the median over the rounds (a CPU
   millisecond on a shared machine is not the same work from one minute to the next: single runs
   of the same code spread by ±0.07). Timings only; nothing is asserted.

    .venv/bin/python bench/bench_worker.py --model-dir .run/bench/model        # N=800, batch 32
    .venv/bin/python bench/bench_worker.py --quick                            # N=160
    LANDMARK_BENCH_WORKERS=2 .venv/bin/python bench/bench_worker.py ...       # two workers

Without ``--model-dir`` (or when it does not exist) a model is fine-tuned quickly first
(``landmark-train``, one epoch at ``--input-size``). Kafka is the local broker
(``deploy/local/kafka.sh``; one already running is used and left running); the Milvus Lite
server is started on its own port and stopped at the end unless it was already running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# The bench's sibling modules, and devstack/ (a checkout package, not installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_accounting import CpuSample, peak_resident_mb, per_photo_ms, pid_from_file, sample
from pydantic import model_validator

from configuration import load_settings, setting
from configuration.kafka import KafkaConnection
from devstack.commands import BIN, split_command, train_command
from devstack.processes import (
    REPO_ROOT,
    child_env,
    ensure_local_service,
    metric_values,
    run_command,
    scrape,
    stop_all,
)

STAGES = ("decode", "embed", "search", "vote", "publish", "commit")


class BenchSettings(KafkaConnection):
    """The bench's settings, from flags and ``LANDMARK_BENCH_*`` variables."""

    group_title: ClassVar[str] = "bench"

    data: Path = setting(
        REPO_ROOT.parent / "shared/data/landmarks",
        env="LANDMARK_DATA_DIR",
        help="folder of landmark folders",
    )
    work_dir: Path = setting(
        REPO_ROOT / ".run/bench", env="LANDMARK_BENCH_DIR", help="split, model, gallery, logs"
    )
    model_dir: Path | None = setting(
        None,
        env="LANDMARK_BENCH_MODEL_DIR",
        help="model export to use (default: fine-tune one quickly into the work dir)",
    )
    n: int = setting(800, ge=2, env="LANDMARK_BENCH_N", help="photos published and consumed")
    quick: bool = setting(False, help="a small run: N=160 (overrides --n)")
    batch: int = setting(
        32, ge=1, env="LANDMARK_BENCH_BATCH", help="worker batch size = bare batch size"
    )
    batch_wait_ms: int = setting(
        200, ge=0, env="LANDMARK_BENCH_BATCH_WAIT_MS", help="worker batch max wait"
    )
    decode_threads: int = setting(
        2, ge=1, env="LANDMARK_BENCH_DECODE_THREADS", help="worker decode threads"
    )
    workers: int = setting(1, ge=1, env="LANDMARK_BENCH_WORKERS", help="workers in the group")
    rounds: int = setting(
        3,
        ge=1,
        env="LANDMARK_BENCH_ROUNDS",
        help="end-to-end runs, each between two bare ones; the CPU overheads are their medians",
    )
    partitions: int = setting(
        4, ge=1, env="LANDMARK_BENCH_PARTITIONS", help="partitions of the images topic"
    )
    input_size: int = setting(
        160,
        ge=32,
        env="LANDMARK_BENCH_INPUT_SIZE",
        help="input size of the model trained when there is none",
    )
    milvus_port: int = setting(
        19541, env="LANDMARK_BENCH_MILVUS_PORT", help="Milvus Lite server port"
    )
    metrics_port: int = setting(
        9128,
        env="LANDMARK_BENCH_METRICS_PORT",
        help="first worker's metrics port (next workers: +1, +2, …)",
    )
    timeout_s: float = setting(
        900.0,
        gt=0,
        flag="--timeout",
        env="LANDMARK_BENCH_TIMEOUT",
        help="seconds to wait for the worker(s)",
    )
    output: Path | None = setting(
        None, env="LANDMARK_BENCH_OUTPUT", help="also write the table (markdown) here"
    )

    @property
    def photos(self) -> int:
        """Photos published: 160 with ``--quick``, else ``--n``."""
        return 160 if self.quick else self.n

    @model_validator(mode="after")
    def _at_least_two_batches(self) -> BenchSettings:
        if self.photos < 2 * self.batch:
            raise ValueError(f"--n ({self.photos}) must be at least two batches ({2 * self.batch})")
        return self


def settings_from(argv: Sequence[str] | None) -> BenchSettings:
    return load_settings(
        BenchSettings,
        argv,
        prog="bench_worker",
        description="Worker end-to-end throughput against the bare model's batched throughput.",
    )


# -- helpers ----------------------------------------------------------------------------------


def sh(
    cmd: Sequence[str | Path], log: Path | None = None, check: bool = True, **env: str
) -> subprocess.CompletedProcess[bytes]:
    return run_command(cmd, log=log, check=check, env=child_env(**env))


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def images_done(text: str) -> float:
    return sum(metric_values(text, "landmark_worker_images_total").values())


def stage_sums(text: str) -> dict[str, float]:
    sums = metric_values(text, "landmark_worker_stage_seconds_sum")
    out = {}
    for labels, value in sums.items():
        m = re.search(r'stage="(\w+)"', labels)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + value
    return out


# -- the bench --------------------------------------------------------------------------------


class Bench:
    def __init__(self, s: BenchSettings) -> None:
        self.s = s
        self.work = s.work_dir
        self.run_id = time.strftime("%Y%m%d%H%M%S")
        self.cleanups: list[Any] = []
        self.logs = self.work / "logs" / self.run_id
        self.milvus_env = {
            "MILVUS_PORT": str(s.milvus_port),
            "MILVUS_DATA_DIR": str(self.work / "milvus"),
        }

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} load {load_average()}] {text}", flush=True)

    # set-up
    def split(self) -> Path:
        split = self.work / "split"
        if not (split / "split.json").is_file():
            sh(
                split_command(self.s.data, split, query=0.2, references=8, cap=24),
                log=self.logs / "split.log",
            )
        return split

    def model(self, split: Path) -> Path:
        if self.s.model_dir is not None and (self.s.model_dir / "manifest.json").is_file():
            return self.s.model_dir
        if self.s.model_dir is not None:
            raise SystemExit(f"error: no model export (manifest.json) in {self.s.model_dir}")
        out = self.work / "train"
        if not (out / "model" / "manifest.json").is_file():
            self.say("no model export given: fine-tuning one quickly (1 epoch)")
            sh([sys.executable, "-m", "trainer.cli.weights", "fetch"])
            sh(
                train_command(
                    split,
                    self.s.data,
                    out,
                    input_size=self.s.input_size,
                    epochs=1,
                    augment_views=1,
                    trainable_from="block_16",
                ),
                log=self.logs / "train.log",
            )
        return out / "model"

    def kafka(self) -> None:
        port = self.s.bootstrap_servers.rpartition(":")[2]
        stop = ensure_local_service("kafka", {"KAFKA_PORT": port}, log=self.logs / "kafka.log")
        if stop is not None:
            self.cleanups.append(stop)

    def gallery(self, model_dir: Path, split: Path) -> str:
        uri = f"http://127.0.0.1:{self.s.milvus_port}"
        stop = ensure_local_service("milvus", self.milvus_env, log=self.logs / "milvus.log")
        if stop is not None:
            self.cleanups.append(stop)
        version = json.loads((model_dir / "manifest.json").read_text())["model_version"]
        sh(
            [
                BIN / "landmark-load-gallery",
                "--model-dir",
                model_dir,
                "--data",
                split / "reference",
                "--milvus-uri",
                uri,
                "--gallery-version",
                f"bench{version}",
            ],
            log=self.logs / "gallery.log",
        )
        return uri

    def photos(self) -> list[Path]:
        every = sorted(self.s.data.glob("*/*.jpg"))
        if len(every) < self.s.photos:
            raise SystemExit(
                f"error: {self.s.data} has {len(every)} photos, --n is {self.s.photos}"
            )
        step = len(every) / self.s.photos
        return [every[int(i * step)] for i in range(self.s.photos)]

    # measurements
    def decode_all(self, blobs: list[bytes], spec: Any) -> tuple[np.ndarray, float, float, float]:
        """Decoded photos, images/s on 1 thread and on the pool, and CPU ms a photo (1 thread)."""
        from schemas.preprocessing import decode_photo

        started, cpu_started = time.perf_counter(), time.process_time()
        images = [decode_photo(b, spec) for b in blobs]
        one_thread = len(blobs) / (time.perf_counter() - started)
        cpu_ms = 1000.0 * (time.process_time() - cpu_started) / len(blobs)
        with ThreadPoolExecutor(self.s.decode_threads) as pool:
            started = time.perf_counter()
            list(pool.map(lambda b: decode_photo(b, spec), blobs))
            pooled = len(blobs) / (time.perf_counter() - started)
        return np.stack(images), one_thread, pooled, cpu_ms

    def bare(self, embedder: Any, images: np.ndarray) -> tuple[float, float]:
        """Images/s of the bare model, and its CPU milliseconds per image (all threads)."""
        b = self.s.batch
        batches = [images[i : i + b] for i in range(0, len(images) - b + 1, b)]
        for batch in batches[:2]:  # warm-up
            embedder.embed(batch)
        started, cpu_started = time.perf_counter(), time.process_time()
        for batch in batches:
            embedder.embed(batch)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return len(batches) * b / wall, 1000.0 * cpu / (len(batches) * b)

    def end_to_end(
        self, model_dir: Path, uri: str, files: list[Path], round_no: int
    ) -> dict[str, Any]:
        from kafka.admin import KafkaAdminClient, NewTopic

        name = f"bench-{self.run_id}-{round_no}"
        topics = {k: f"{name}.{k}" for k in ("images", "tags", "dlq")}
        admin = KafkaAdminClient(
            bootstrap_servers=self.s.bootstrap_servers, client_id="bench-worker"
        )
        try:
            admin.create_topics([NewTopic(t, self.s.partitions, 1) for t in topics.values()])
        finally:
            admin.close()
        self.say(
            f"publishing {len(files)} photos inline to {topics['images']} "
            f"({self.s.partitions} partitions)"
        )
        sh(
            [
                BIN / "landmark-publish",
                *files,
                "--bootstrap-servers",
                self.s.bootstrap_servers,
                "--topic",
                topics["images"],
                "--as",
                "inline",
                "--quiet",
                "--source",
                "bench-worker",
            ],
            log=self.logs / f"round{round_no}-publish.log",
        )
        ports = [self.s.metrics_port + i for i in range(self.s.workers)]
        procs: list[subprocess.Popen[bytes]] = []
        self.say(
            f"starting {self.s.workers} worker(s), batch {self.s.batch}, "
            f"decode threads {self.s.decode_threads}"
        )
        for i, port in enumerate(ports):
            log = (self.logs / f"round{round_no}-worker-{i + 1}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "landmark-worker"),
                        "--model-dir",
                        str(model_dir),
                        "--milvus-uri",
                        uri,
                        "--bootstrap-servers",
                        self.s.bootstrap_servers,
                        "--images-topic",
                        topics["images"],
                        "--tags-topic",
                        topics["tags"],
                        "--dead-letter-topic",
                        topics["dlq"],
                        "--group-id",
                        name,
                        "--worker-id",
                        f"bench-worker-{i + 1}",
                        "--http-port",
                        str(port),
                        "--batch-max-records",
                        str(self.s.batch),
                        "--batch-max-wait-ms",
                        str(self.s.batch_wait_ms),
                        "--decode-threads",
                        str(self.s.decode_threads),
                        "--auto-offset-reset",
                        "earliest",
                        "--log-format",
                        "json",
                    ],
                    env=child_env(),
                    cwd=REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        self.cleanups.append(lambda: stop_all(procs))
        deadline = time.monotonic() + self.s.timeout_s
        pids = {
            "worker": [p.pid for p in procs],
            "milvus": [pid for pid in [self.milvus_pid()] if pid],
            "kafka": [pid for pid in [self.kafka_pid()] if pid],
        }
        first: CpuSample | None = None
        while True:
            done = sum(images_done(scrape(p)) for p in ports)
            if first is None and done > 0:
                first = sample(pids, done)
            if done >= self.s.photos:
                last = sample(pids, done)
                break
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}; see {self.logs}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done}/{self.s.photos} photos after {self.s.timeout_s}s")
            time.sleep(0.1)
        texts = [scrape(p) for p in ports]
        peaks = [peak_resident_mb(p.pid) for p in procs]
        stop_all(procs)
        batches = []
        for i in range(self.s.workers):
            log_text = (self.logs / f"round{round_no}-worker-{i + 1}.log").read_text()
            for line in log_text.splitlines():
                if '"batch committed"' not in line:
                    continue
                event = json.loads(line)
                end = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
                spent = sum(
                    float(event[k])
                    for k in ("decode", "embed", "search", "vote", "publish_s", "commit_s")
                )
                batches.append((end.timestamp() - spent, end.timestamp(), int(event["records"])))
        window = max(b[1] for b in batches) - min(b[0] for b in batches)
        outcomes: dict[str, float] = {}
        for text in texts:
            for labels, value in metric_values(text, "landmark_worker_images_total").items():
                outcomes[labels] = outcomes.get(labels, 0.0) + value
        sums: dict[str, float] = {}
        for text in texts:
            for stage, value in stage_sums(text).items():
                sums[stage] = sums.get(stage, 0.0) + value
        return {
            "images": sum(b[2] for b in batches),
            "batches": len(batches),
            "window_s": window,
            "stage_s": sums,
            "outcomes": outcomes,
            "cpu_ms": per_photo_ms(first, last) if first is not None else {},
            "worker_peak_mb": max((m for m in peaks if m is not None), default=None),
        }

    def milvus_pid(self) -> int | None:
        return pid_from_file(REPO_ROOT / ".run" / f"milvus-{self.s.milvus_port}.pid")

    def kafka_pid(self) -> int | None:
        port = self.s.bootstrap_servers.rpartition(":")[2]
        name = "kafka" if port == "19092" else f"kafka-{port}"
        return pid_from_file(REPO_ROOT / ".run" / f"{name}.pid")

    def cleanup(self) -> None:
        for action in reversed(self.cleanups):
            try:
                action()
            except Exception as error:
                print(f"(clean-up failed: {error})", file=sys.stderr)
        self.cleanups.clear()

    def main(self) -> dict[str, Any]:
        self.logs.mkdir(parents=True, exist_ok=True)
        load_start = load_average()
        try:
            split = self.split()
            model_dir = self.model(split)
            self.kafka()
            self.say(f"gallery: {split / 'reference'} into Milvus Lite :{self.s.milvus_port}")
            uri = self.gallery(model_dir, split)
            files = self.photos()
            blobs = [f.read_bytes() for f in files]

            from worker.adapters.keras_embedder import KerasEmbedder

            embedder = KerasEmbedder.from_export(model_dir)
            embedder.warm_up((self.s.batch,))
            self.say(f"decoding {len(blobs)} photos (1 thread, then {self.s.decode_threads})")
            images, decode_1, decode_pool, decode_cpu_ms = self.decode_all(
                blobs, embedder.manifest.preprocessing
            )
            self.say("bare embedding")
            bares = [self.bare(embedder, images)]
            runs = []
            for round_no in range(1, self.s.rounds + 1):
                self.say(f"end to end, round {round_no} of {self.s.rounds}")
                runs.append(self.end_to_end(model_dir, uri, files, round_no))
                self.say("bare embedding")
                bares.append(self.bare(embedder, images))
        finally:
            self.cleanup()
        # Each round between the bare runs just before and after it: on a shared machine a CPU
        # millisecond is not the same work from one minute to the next.
        rounds = [
            {
                "bare_before": before[0],
                "bare_after": after[0],
                "bare_cpu_ms": (before[1] + after[1]) / 2,
                "e2e": e2e,
            }
            for before, after, e2e in zip(bares[:-1], bares[1:], runs, strict=True)
        ]
        shown = median_round(rounds)
        return {
            "n": self.s.photos,
            "batch": self.s.batch,
            "workers": self.s.workers,
            "decode_threads": self.s.decode_threads,
            "input_size": embedder.input_size,
            "model_version": embedder.model_version,
            "load_start": load_start,
            "load_end": load_average(),
            "decode_1": decode_1,
            "decode_pool": decode_pool,
            "decode_cpu_ms": decode_cpu_ms,
            **rounds[shown],
            "shown_round": shown + 1,
            "rounds": rounds,
        }


def speeds(r: dict[str, Any]) -> tuple[float, float]:
    """A round's bare photos/s (B, the mean of the runs before and after it) and end-to-end
    photos/s (E)."""
    e = r["e2e"]
    return (r["bare_before"] + r["bare_after"]) / 2, e["images"] / e["window_s"]


def table(r: dict[str, Any]) -> str:
    e = r["e2e"]
    bare, e2e_rate = speeds(r)
    window = e["window_s"] * r["workers"]  # worker-seconds
    serial_bound = 1 / (1 / r["decode_pool"] + 1 / bare)
    in_situ = (
        e["images"] * r["workers"] / e["stage_s"]["embed"]
        if e["stage_s"].get("embed")
        else float("nan")
    )
    lines = [
        f"worker benchmark: N={r['n']} photos, batch {r['batch']}, {r['workers']} worker(s), "
        f"{r['decode_threads']} decode threads, input {r['input_size']} px, "
        f"model {r['model_version']}, {os.cpu_count()} CPUs",
        f"load average at start {r['load_start']}, at end {r['load_end']}",
        "",
        "| figure | images/s |",
        "| --- | ---: |",
        f"| bare embedding, before end-to-end | {r['bare_before']:.1f} |",
        f"| bare embedding, after end-to-end | {r['bare_after']:.1f} |",
        f"| bare embedding, mean (B) | {bare:.1f} |",
        f"| decode alone, 1 thread | {r['decode_1']:.1f} |",
        f"| decode alone, {r['decode_threads']} threads | {r['decode_pool']:.1f} |",
        f"| decode then embed, serial bound 1/(1/decode+1/B) | {serial_bound:.1f} |",
        f"| **end to end** ({e['images']} photos, {e['batches']} batches, "
        f"{e['window_s']:.1f} s) (E) | **{e2e_rate:.1f}** |",
        f"| worker's own embed stage: images / embed seconds (W) | {in_situ:.1f} |",
        "",
        f"**ratio E/B = {e2e_rate / bare:.3f}** (target ≥ 0.9); E/W = "
        f"{e2e_rate / in_situ:.3f} (the embed stage's share of the worker's time, i.e. the "
        f"ratio with the model's speed as measured inside the worker); E against the serial "
        f"decode+embed bound: {e2e_rate / serial_bound:.3f}",
        "",
        "| stage | seconds | share of window | ms a photo |",
        "| --- | ---: | ---: | ---: |",
    ]
    accounted = 0.0
    for stage in STAGES:
        sec = e["stage_s"].get(stage, 0.0)
        accounted += sec
        lines.append(
            f"| {stage} | {sec:.2f} | {sec / window:.1%} | {1000 * sec / e['images']:.2f} |"
        )
    other = window - accounted
    lines.append(
        f"| other (poll, logs, metrics) | {other:.2f} | {other / window:.1%} | "
        f"{1000 * other / e['images']:.2f} |"
    )
    lines.append(
        f"| window{' (worker-seconds)' if r['workers'] > 1 else ''} | {window:.2f} | "
        f"100% | {1000 * window / e['images']:.2f} |"
    )
    lines.append(
        f"| bare embed, for comparison | {e['images'] / bare:.2f} | "
        f"{e['images'] / bare / window:.1%} | {1000 / bare:.2f} |"
    )
    lines.append(
        "(the loop is pipelined: decoding and publishing overlap embedding and searching, so "
        "the stages' seconds can add up to more than the window)"
    )
    lines += ["", *cpu_table(r, bare, e2e_rate)]
    lines.append("")
    lines.append(f"outcomes: {json.dumps(e['outcomes'])}")
    if len(r.get("rounds") or []) > 1:
        lines += ["", *rounds_table(r)]
    lines += ["", *overhead_lines(r)]
    return "\n".join(lines)


def overheads(r: dict[str, Any]) -> tuple[float, float] | None:
    """A round's (worker, system) CPU overheads, or None without CPU accounting.

    worker: worker-process CPU per photo / bare-model CPU per photo;
    system: worker + Milvus + Kafka CPU per photo / bare-model CPU per photo.
    """
    cpu = r["e2e"].get("cpu_ms") or {}
    bare_ms = r["bare_cpu_ms"]
    if not cpu or not bare_ms:
        return None
    system = sum(cpu.get(name, 0.0) for name in ("worker", "milvus", "kafka"))
    return cpu.get("worker", float("nan")) / bare_ms, system / bare_ms


def median_round(rounds: Sequence[dict[str, Any]]) -> int:
    """The index of the round whose worker CPU overhead is the median (the lower of the middle
    two), the one shown in full; the first when no round has CPU accounting."""
    measured = [(o[0], i) for i, r in enumerate(rounds) if (o := overheads(r)) is not None]
    if not measured:
        return 0
    return sorted(measured)[(len(measured) - 1) // 2][1]


def overhead_lines(r: dict[str, Any]) -> list[str]:
    """The two figures the throughput issue sets targets for, last in the output: each the
    median over the rounds (``r["rounds"]``; ``r`` itself when it has none)."""
    found = [o for o in map(overheads, r.get("rounds") or [r]) if o is not None]
    if not found:
        return ["worker CPU overhead: n/a", "system CPU overhead: n/a"]
    worker = statistics.median(o[0] for o in found)
    system = statistics.median(o[1] for o in found)
    return [f"worker CPU overhead: {worker:.2f}", f"system CPU overhead: {system:.2f}"]


def rounds_table(r: dict[str, Any]) -> list[str]:
    """One line a round: its bare and end-to-end speeds, CPU a photo and overheads."""
    lines = [
        f"Rounds (each end-to-end run between the bare runs just before and after it; round "
        f"{r['shown_round']}, the median worker overhead, is shown in full above):",
        "",
        "| round | B photos/s | E photos/s | E/B | CPU ms a photo: bare / worker / Milvus / Kafka "
        "| worker CPU overhead | system CPU overhead |",
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for number, one in enumerate(r["rounds"], start=1):
        bare, rate = speeds(one)
        cpu = one["e2e"].get("cpu_ms") or {}
        ms = " / ".join(
            f"{v:.2f}" if v is not None else "n/a"
            for v in (one["bare_cpu_ms"], *(cpu.get(n) for n in ("worker", "milvus", "kafka")))
        )
        found = overheads(one)
        worker, system = (f"{v:.2f}" for v in found) if found else ("n/a", "n/a")
        lines.append(
            f"| {number} | {bare:.1f} | {rate:.1f} | {rate / bare:.3f} | {ms} | {worker} "
            f"| {system} |"
        )
    return lines


def cpu_table(r: dict[str, Any], bare: float, e2e_rate: float) -> list[str]:
    """CPU milliseconds per photo by process, and the throughput bound they imply."""
    cpu = r["e2e"].get("cpu_ms") or {}
    if not cpu:
        return ["(no CPU accounting: the window had no progress samples)"]
    cores = os.cpu_count() or 1
    lines = [
        "| CPU per photo | ms |",
        "| --- | ---: |",
        f"| bare embedding (this process, all threads) | {r['bare_cpu_ms']:.2f} |",
        f"| decode alone (1 thread) | {r['decode_cpu_ms']:.2f} |",
    ]
    for name in ("worker", "milvus", "kafka"):
        if name in cpu:
            lines.append(f"| end to end: {name} process | {cpu[name]:.2f} |")
    involved = sum(cpu.get(n, 0.0) for n in ("worker", "milvus", "kafka"))
    lines.append(f"| end to end: worker + Milvus + Kafka | {involved:.2f} |")
    lines.append(f"| end to end: whole machine (other tenants too) | {cpu['machine']:.2f} |")
    bound = 1000.0 * cores / involved if involved else float("nan")
    lines += [
        "",
        f"With {cores} cores fully used, photos/s ≤ {cores} * 1000 / {involved:.2f} ms = "
        f"**{bound:.1f}**, i.e. **E/B ≤ {bound / bare:.3f}** whatever the overlap; "
        f"measured E is {e2e_rate / bound:.1%} of that bound. The bare model keeps "
        f"{r['bare_cpu_ms'] * bare / 1000.0:.2f} cores busy.",
    ]
    if r["e2e"].get("worker_peak_mb") is not None:
        lines += ["", f"Worker peak resident memory (VmHWM): {r['e2e']['worker_peak_mb']:.0f} MB."]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from(argv)
    bench = Bench(settings)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    result = bench.main()
    text = table(result)
    print("\n" + text)
    (bench.logs / "result.json").write_text(json.dumps(result, indent=2))
    if settings.output is not None:
        with settings.output.open("a") as out:
            out.write(f"\n## run {bench.run_id} UTC\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
