"""On failure, quote the logs of the worker processes the test ran; the poison rig's worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.poison_rig import PoisonRig, running_poison_rig
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


@pytest.fixture(scope="session")
def poison_rig(
    kafka_bootstrap: str, landmarks_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PoisonRig]:
    """One worker for the poison-record suite and the fuzz run (they do not stop it)."""
    with running_poison_rig(
        kafka_bootstrap, landmarks_dir, tmp_path_factory.mktemp("poison")
    ) as rig:
        yield rig
