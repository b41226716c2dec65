"""On failure, quote the logs of the worker processes the test ran (and of the real Milvus server,
for its tests); the poison rig's worker; the session's real Milvus server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.poison_rig import PoisonRig, running_poison_rig
from tests.integration.worker_stack import LOG_FILES, log_digest
from tests.milvus_server import MilvusStandaloneServer, milvus_standalone_missing


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
    # The real Milvus server logs all the time: quoted for its own tests only.
    if "milvus_standalone" in getattr(item, "fixturenames", ()) or "milvus-2.3" in item.name:
        for path in _STANDALONE_LOGS:
            report.sections.append((f"log {path.name}", log_digest(path)))


_STARTED = pytest.StashKey[float]()
_STANDALONE_LOGS: list[Path] = []


@pytest.fixture(scope="session")
def poison_rig(
    kafka_bootstrap: str, landmarks_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PoisonRig]:
    """One worker for the poison-record suite and the fuzz run (they do not stop it)."""
    with running_poison_rig(
        kafka_bootstrap, landmarks_dir, tmp_path_factory.mktemp("poison")
    ) as rig:
        yield rig


@pytest.fixture(scope="session")
def milvus_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusStandaloneServer]:
    """One real Milvus standalone server (2.3.5, PyPI's ``milvus``) shared by the session.

    Its users keep out of each other's way: each test searches an alias of its own and drops
    the collections it made (:func:`tests.milvus_server.collections_dropped_after`). Skips
    where the package's server cannot run (see :func:`milvus_standalone_missing`).
    """
    missing = milvus_standalone_missing()
    if missing is not None:
        pytest.skip(missing)
    with MilvusStandaloneServer(tmp_path_factory.mktemp("milvus-standalone") / "data") as server:
        _STANDALONE_LOGS.append(server.log_path)
        yield server
