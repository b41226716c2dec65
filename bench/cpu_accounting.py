"""CPU time per photo, by process, from /proc: where a CPU-bound pipeline's cores go.

On a machine whose cores are all busy, end-to-end throughput cannot exceed
``cores / (CPU seconds per photo of every process involved)``, however the stages overlap. The
worker benchmark samples the worker, the Milvus server, the Kafka broker and the whole machine
at the start and the end of the measured window and prints that bound next to the measured rate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (its threads included), 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis are
    # state, ppid, ..., with utime and stime the 12th and 13th of them.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def threads_cpu_s(pid: int) -> float:
    """CPU seconds of the live threads of process ``pid``, to the nanosecond, 0 when it is gone.

    From ``/proc/PID/task/*/schedstat``: fine enough for one call to a server (``stat`` counts
    10 ms ticks), but threads that have ended no longer count, so take differences over short
    windows only.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    total = 0
    for task in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # the thread ended meanwhile
            continue
    return total / 1e9


def peak_resident_mb(pid: int) -> float | None:
    """Peak resident memory of process ``pid`` in MB (``VmHWM``), None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def machine_busy_s() -> float:
    """CPU seconds all cores have spent on anything but idling since boot."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (sum(values) - idle) / _TICKS


def pid_from_file(path: Path) -> int | None:
    """The pid in a ``deploy/local`` pid file, None when there is none or it has exited."""
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds of named processes and of the whole machine at one moment."""

    processes: Mapping[str, float]
    machine: float
    images: float


def sample(pids: Mapping[str, list[int]], images: float) -> CpuSample:
    """Sum the CPU seconds of each named group of pids, with the images done so far."""
    return CpuSample(
        processes={name: sum(process_cpu_s(p) for p in group) for name, group in pids.items()},
        machine=machine_busy_s(),
        images=images,
    )


def per_photo_ms(start: CpuSample, end: CpuSample) -> dict[str, float]:
    """CPU milliseconds per photo between two samples, per process group and for the machine."""
    photos = end.images - start.images
    if photos <= 0:
        return {}
    out = {
        name: 1000.0 * (end.processes[name] - start.processes.get(name, 0.0)) / photos
        for name in end.processes
    }
    out["machine"] = 1000.0 * (end.machine - start.machine) / photos
    return out
