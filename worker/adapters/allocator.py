"""The C allocator's settings for a worker process, so that camera-size photos reuse memory.

A worker handles photos of 1-10 MB (read from files or URLs, or inline in records): each one is a
fresh buffer, often several (the read, kafka-python's copies). glibc serves a block larger than
its mmap threshold (128 KiB at first, raised only to the largest mapped block freed so far) with a
new mapping, and gives memory back to the system whenever twice that threshold lies free at the
top of an arena; every thread that allocates gets an arena of its own. Each photo's buffers were
then mapped, faulted in and zeroed page by page, and unmapped again. With the threshold at 32 MiB
and trimming past 128 MiB, fetching a 1.4 MB photo by reference with 2 threads cost 0.31-0.41 ms
of CPU instead of 0.42-0.66, and the loop by reference ran 47% faster from memory and 12% faster
through Kafka (8 threads: 29% and 14%), for 210-290 MB more resident memory
(``docs/results/bench_loop.md``).

:func:`tune_allocator` sets those two thresholds with ``mallopt`` unless ``MALLOC_*`` variables
of the environment already set them (the operator's choice stands), and only on glibc (musl's
``mallopt`` does nothing; other systems have none).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from typing import Literal

#: Blocks up to this size come from the heap instead of a mapping of their own.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Free memory at the top of an arena is returned to the system beyond this.
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024
#: Environment variables with which glibc reads the same settings at start-up.
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

AllocatorOutcome = Literal["tuned", "environment", "unavailable"]


def tune_allocator(environ: Mapping[str, str] | None = None) -> AllocatorOutcome:
    """Keep blocks under :data:`MMAP_THRESHOLD_BYTES` in the heap, trim past
    :data:`TRIM_THRESHOLD_BYTES`.

    Args:
        environ: The process environment (default ``os.environ``).

    Returns:
        ``tuned`` when set, ``environment`` when a ``MALLOC_*`` variable of :data:`ENVIRONMENT`
        is set (glibc read it at start-up; nothing is changed), ``unavailable`` when the C
        library is not glibc or refused a setting.
    """
    environ = os.environ if environ is None else environ
    if any(name in environ for name in ENVIRONMENT):
        return "environment"
    libc = _glibc()
    if libc is None:
        return "unavailable"
    mapped = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return "tuned" if mapped == 1 and trimmed == 1 else "unavailable"


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
