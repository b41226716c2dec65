"""``python -m worker.observability.probe``: the image's HEALTHCHECK against a real status server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.milvus_server import free_port
from worker.observability.health import HealthState
from worker.observability.metrics import WorkerMetrics
from worker.observability.probe import main, probe_url
from worker.observability.status_server import StatusServer


@pytest.fixture
def server() -> Iterator[tuple[StatusServer, HealthState]]:
    state = HealthState()
    status = StatusServer("127.0.0.1", 0, state, WorkerMetrics().registry).start()
    yield status, state
    status.stop()


def test_probe_url_follows_the_workers_variables() -> None:
    assert probe_url({}) == "http://127.0.0.1:9108/healthz"
    assert probe_url({"LANDMARK_HTTP_HOST": "0.0.0.0", "LANDMARK_HTTP_PORT": "9200"}, "readyz") == (
        "http://127.0.0.1:9200/readyz"
    )
    assert probe_url({"LANDMARK_HTTP_HOST": "::"}) == "http://[::1]:9108/healthz"
    assert probe_url({"LANDMARK_HTTP_HOST": "10.1.2.3"}) == "http://10.1.2.3:9108/healthz"
    for bad in ("0", "70000", "http"):
        with pytest.raises(ValueError, match="LANDMARK_HTTP_PORT"):
            probe_url({"LANDMARK_HTTP_PORT": bad})
    with pytest.raises(ValueError, match="unknown path"):
        probe_url({}, "metrics")


def test_probe_exits_0_on_a_healthy_worker_and_1_on_an_unready_one(
    server: tuple[StatusServer, HealthState],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, state = server
    monkeypatch.setenv("LANDMARK_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("LANDMARK_HTTP_PORT", str(status.port))
    assert main(["healthz"]) == 0
    assert main(["readyz"]) == 1  # no model, gallery or partitions yet
    assert "probe: 503" in capsys.readouterr().err
    state.set_loaded(model=True, gallery=True)
    state.set_partitions(frozenset({("images", 0)}))
    state.unblock()
    assert main(["readyz"]) == 0


def test_probe_exits_1_when_nothing_listens_and_2_on_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LANDMARK_HTTP_PORT", str(free_port()))
    assert main([]) == 1
    monkeypatch.setenv("LANDMARK_HTTP_PORT", "not-a-port")
    assert main([]) == 2


def test_the_probe_runs_as_the_image_runs_it_without_importing_keras() -> None:
    code = (
        "import sys, runpy; sys.argv = ['probe', 'healthz']\n"
        "try:\n    runpy.run_module('worker.observability.probe', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'numpy', 'kafka') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={"LANDMARK_HTTP_PORT": str(free_port()), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
