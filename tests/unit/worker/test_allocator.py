"""The worker's C allocator settings: camera-size buffers come from the heap once tuned."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from worker.adapters.allocator import ENVIRONMENT, tune_allocator

# In a process of its own (the settings are process-wide): allocate three 3 MB buffers, as a
# worker does for camera-size photos, and report the bytes glibc mapped for them.
_PROBE = """
import ctypes, os, sys
from worker.adapters.allocator import tune_allocator
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
outcome = tune_allocator() if sys.argv[1] == "tune" else "untouched"
before = libc.mallinfo2().hblkhd
held = [os.urandom(3_000_000) for _ in range(3)]
print(outcome, libc.mallinfo2().hblkhd - before)
"""

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the settings are glibc's"
)


def _probe(mode: str) -> tuple[str, int]:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k not in ENVIRONMENT},
    )
    outcome, mapped = run.stdout.split()
    return outcome, int(mapped)


@glibc_only
def test_camera_size_buffers_are_mapped_one_by_one_with_glibc_defaults() -> None:
    assert _probe("untouched") == ("untouched", pytest.approx(9_000_000, rel=0.01))


@glibc_only
def test_once_tuned_camera_size_buffers_come_from_the_heap() -> None:
    assert _probe("tune") == ("tuned", 0)


def test_the_environment_s_malloc_settings_stand() -> None:
    for name in ENVIRONMENT:
        assert tune_allocator({name: "1048576"}) == "environment"
