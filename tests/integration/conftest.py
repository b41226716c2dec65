"""On failure, quote the logs of the worker processes the test ran (they run out of process)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.worker_stack import LOG_FILES, log_digest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    outcome = yield
    report = outcome.get_result()
    if call.when == "setup":
        item.stash[_STARTED] = time.time()
    if not report.failed:
        return
    started = item.stash.get(_STARTED, call.start) - 120.0  # module fixtures start earlier
    for path in dict.fromkeys(LOG_FILES):
        try:
            written = path.stat().st_mtime
        except OSError:
            continue
        if written >= started:
            report.sections.append((f"log {path.parent.name}/{path.name}", log_digest(path)))


_STARTED = pytest.StashKey[float]()
