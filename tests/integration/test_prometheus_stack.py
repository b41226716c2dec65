"""The local Prometheus started by ``deploy/local/prometheus.sh`` with deploy/prometheus/*.yml."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"


def _job_names(config_yaml: str) -> set[str]:
    return set(re.findall(r"^\s*-?\s*job_name:\s*(\S+)\s*$", config_yaml, flags=re.MULTILINE))


def _wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout_s:.0f}s")
        time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[int, str]]:
    """A real /metrics endpoint on 127.0.0.1 exposing a gauge with a unique name and value 42."""
    registry = CollectorRegistry()
    name = f"landmark_test_gauge_{uuid.uuid4().hex[:8]}"
    Gauge(name, "A gauge the scrape test looks for", registry=registry).set(42)
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port, name
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize("command, path", [("config", CONFIG), ("rules", RULES)])
def test_promtool_accepts_the_configuration(command: str, path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool is not installed (Debian package prometheus; `make prometheus-start`)"
        )
    result = subprocess.run(
        [promtool, "check", command, str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_ready_endpoint_answers(prometheus_url: str) -> None:
    with urllib.request.urlopen(f"{prometheus_url}/-/ready", timeout=5) as response:
        assert response.status == 200
        assert b"Ready" in response.read()


@pytest.mark.integration
def test_running_configuration_has_the_project_scrape_jobs(
    prometheus_api: Callable[[str], Any],
) -> None:
    running = _job_names(prometheus_api("/api/v1/status/config")["yaml"])

    assert running == _job_names(CONFIG.read_text())
    assert {"prometheus", "landmark-worker"} <= running


@pytest.mark.integration
def test_every_configured_job_has_active_targets(prometheus_api: Callable[[str], Any]) -> None:
    def active_jobs() -> set[str]:
        targets = prometheus_api("/api/v1/targets?state=active")["activeTargets"]
        jobs = {target["labels"]["job"] for target in targets}
        return jobs if jobs >= _job_names(CONFIG.read_text()) else set()

    _wait_for(active_jobs, 15, "not every configured job had an active target")


@pytest.mark.integration
def test_prometheus_scrapes_itself(
    prometheus_url: str, prometheus_api: Callable[[str], Any]
) -> None:
    listening = prometheus_url.removeprefix("http://").rstrip("/")
    if f'"{listening}"' not in CONFIG.read_text():
        pytest.skip(f"{CONFIG.name} scrapes Prometheus at 127.0.0.1:19090, not at {listening}")

    def self_scrape_up() -> bool:
        result = prometheus_api("/api/v1/query?query=up%7Bjob%3D%22prometheus%22%7D")["result"]
        return any(sample["value"][1] == "1" for sample in result)

    _wait_for(self_scrape_up, 20, 'up{job="prometheus"} did not become 1')


@pytest.mark.integration
def test_alert_rules_are_loaded(prometheus_api: Callable[[str], Any]) -> None:
    groups = prometheus_api("/api/v1/rules")["groups"]
    alerts = {rule["name"] for group in groups for rule in group["rules"]}

    configured = set(re.findall(r"^\s*-\s*alert:\s*(\S+)\s*$", RULES.read_text(), re.MULTILINE))
    assert "LandmarkWorkerDown" in configured
    assert alerts == configured


@pytest.mark.integration
def test_worker_target_file_is_scraped(
    prometheus_api: Callable[[str], Any],
    prometheus_targets_dir: Path,
    metrics_endpoint: tuple[int, str],
) -> None:
    """A file_sd target file dropped into .run/prometheus/targets is scraped as landmark-worker."""
    port, gauge = metrics_endpoint
    target_file = prometheus_targets_dir / f"test-{uuid.uuid4().hex[:8]}.json"
    target_file.write_text(
        json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"worker_id": "scrape-test"}}])
    )
    try:

        def scraped_value() -> list[Any]:
            query = f"{gauge}%7Bjob%3D%22landmark-worker%22%2Cworker_id%3D%22scrape-test%22%7D"
            return list(prometheus_api(f"/api/v1/query?query={query}")["result"])

        result = _wait_for(scraped_value, 30, f"{gauge} from 127.0.0.1:{port} was not scraped")
    finally:
        target_file.unlink()

    assert [sample["value"][1] for sample in result] == ["42"]
