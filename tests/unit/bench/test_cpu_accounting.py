"""The benchmark's CPU accounting reads /proc correctly and divides by the photos done."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

from cpu_accounting import (
    CpuSample,
    machine_busy_s,
    peak_resident_mb,
    per_photo_ms,
    pid_from_file,
    process_cpu_s,
    threads_cpu_s,
)


def cpu_while_burning(measure: Callable[[int], float], seconds: float) -> tuple[float, float]:
    """CPU seconds this process spent spinning for ``seconds``: by ``measure``, by Python."""
    before, own_before = measure(os.getpid()), time.process_time()
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass
    return measure(os.getpid()) - before, time.process_time() - own_before


def test_process_cpu_time_matches_what_python_measures_for_itself() -> None:
    spent, own_spent = cpu_while_burning(process_cpu_s, 0.3)
    assert abs(spent - own_spent) < 0.05


def test_thread_cpu_time_is_fine_grained_and_matches_the_process_time() -> None:
    spent, own_spent = cpu_while_burning(threads_cpu_s, 0.05)
    assert abs(spent - own_spent) < 0.01
    assert threads_cpu_s(999_999_999) == 0.0


def test_machine_busy_time_grows_while_this_process_works() -> None:
    before = machine_busy_s()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert machine_busy_s() - before >= 0.15


def test_a_gone_process_counts_zero_and_a_stale_pid_file_reads_none(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text("999999999\n")
    assert process_cpu_s(999_999_999) == 0.0
    assert pid_from_file(pid_file) is None
    assert pid_from_file(tmp_path / "missing.pid") is None


def test_peak_resident_memory_is_what_the_process_touched_in_mb() -> None:
    touch = "import sys; held = b'x' * (200 * 1024 * 1024); print('ready', flush=True); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", touch], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        peak = peak_resident_mb(child.pid)
    finally:
        child.communicate("")
    assert peak is not None and 200 <= peak < 400
    assert peak_resident_mb(child.pid) is None  # gone


def test_per_photo_milliseconds_divide_the_cpu_seconds_by_the_photos_done() -> None:
    start = CpuSample(processes={"worker": 1.0, "kafka": 2.0}, machine=10.0, images=100)
    end = CpuSample(processes={"worker": 3.0, "kafka": 2.5}, machine=14.0, images=500)
    assert per_photo_ms(start, end) == {"worker": 5.0, "kafka": 1.25, "machine": 10.0}
    assert per_photo_ms(end, end) == {}


def test_the_overhead_lines_divide_cpu_per_photo_by_the_bare_models() -> None:
    from bench_worker import overhead_lines

    result = {"bare_cpu_ms": 8.0, "e2e": {"cpu_ms": {"worker": 8.8, "milvus": 1.2, "kafka": 0.4}}}
    assert overhead_lines(result) == ["worker CPU overhead: 1.10", "system CPU overhead: 1.30"]
    assert overhead_lines({"bare_cpu_ms": 8.0, "e2e": {}}) == [
        "worker CPU overhead: n/a",
        "system CPU overhead: n/a",
    ]


def test_the_overheads_are_the_medians_over_rounds_and_the_median_round_is_shown() -> None:
    from bench_worker import median_round, overhead_lines, rounds_table

    def one(bare_ms: float, worker: float, milvus: float) -> dict[str, object]:
        e2e = {"images": 800, "window_s": 8.0, "cpu_ms": {"worker": worker, "milvus": milvus}}
        return {"bare_before": 110.0, "bare_after": 90.0, "bare_cpu_ms": bare_ms, "e2e": e2e}

    # worker overheads 1.16, 1.03, 1.08; system 1.26, 1.13, 1.38
    rounds = [one(10.0, 11.6, 1.0), one(10.0, 10.3, 1.0), one(10.0, 10.8, 3.0)]
    assert median_round(rounds) == 2
    result = {"rounds": rounds, "shown_round": 3}
    assert overhead_lines(result) == ["worker CPU overhead: 1.08", "system CPU overhead: 1.26"]
    table = rounds_table(result)
    assert "round 3, the median worker overhead" in table[0]
    assert table[-1] == "| 3 | 100.0 | 100.0 | 1.000 | 10.00 / 10.80 / 3.00 / n/a | 1.08 | 1.38 |"
    # A round without CPU accounting counts for nothing; with none at all, n/a.
    assert median_round([{"bare_cpu_ms": 8.0, "e2e": {}}, *rounds[:1]]) == 1
    assert overhead_lines({"rounds": [{"bare_cpu_ms": 8.0, "e2e": {}}]}) == [
        "worker CPU overhead: n/a",
        "system CPU overhead: n/a",
    ]
