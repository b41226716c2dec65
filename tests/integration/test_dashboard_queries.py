"""The Grafana dashboard's queries against the real Prometheus, scraping a real worker.

A ``landmark-worker`` process (real Kafka, Milvus Lite server, a small real model) is registered
with the local Prometheus through a file_sd target file; after it has tagged photos, every panel
query of every dashboard in ``deploy/grafana/`` must be accepted by Prometheus, and the panels
that describe a working worker must have data.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.worker_stack import (
    WorkerProcess,
    create_topics,
    delete_topics,
    publish,
    shared_stack,
    worker_on_topics,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO_ROOT / "deploy" / "grafana").glob("*.json"))
#: Grafana's built-in variables, as Grafana would expand them for a 2 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "10s", "$__range": "15m"}
#: Panels that must show data once a worker has tagged photos.
PANELS_WITH_DATA = (
    "Workers ready",
    "Photos per second",
    "Throughput by outcome",
    "Stage latency p95 (per batch)",
    "End-to-end latency (published → tagged)",
    "Consumer lag by partition",
    "Batch size",
    "Model and gallery versions",
)


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target of every panel, rows included."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        stack = list(dashboard["panels"])
        while stack:
            panel = stack.pop()
            stack.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def expand(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def query(prometheus_url: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


@pytest.fixture(scope="module")
def scraped_worker(
    kafka_bootstrap: str,
    prometheus_url: str,
    prometheus_targets_dir: Path,
    landmarks_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[WorkerProcess, Callable[[int], None]]]:
    stack = shared_stack(landmarks_dir)
    topics = create_topics(kafka_bootstrap, "worker-dashboard")
    logs = tmp_path_factory.mktemp("dashboard-worker")
    worker = worker_on_topics(
        stack,
        kafka_bootstrap,
        topics,
        "worker-dashboard",
        logs / "worker.log",
    )
    target_file = prometheus_targets_dir / f"{topics[0]}.json"
    photos = sorted(landmarks_dir.glob("*/*.jpg"))[5::11]
    waves = iter(range(100))

    def send(count: int) -> None:
        start = next(waves) * count
        publish(
            kafka_bootstrap, topics[0], photos[start : start + count], logs / f"ids-{start}.jsonl"
        )

    try:
        worker.wait_ready()
        target_file.write_text(
            json.dumps([{"targets": [f"127.0.0.1:{worker.port}"], "labels": {"test": topics[0]}}])
        )
        yield worker, send
    finally:
        target_file.unlink(missing_ok=True)
        worker.kill()
        delete_topics(kafka_bootstrap, topics)


def _instance_total(prometheus_url: str, worker: WorkerProcess) -> float | None:
    expr = f'sum(landmark_worker_images_total{{instance="127.0.0.1:{worker.port}"}})'
    result = query(prometheus_url, expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _wait_for_total(
    prometheus_url: str, worker: WorkerProcess, at_least: float, timeout_s: float = 60.0
) -> float:
    deadline = time.monotonic() + timeout_s
    total = None
    while time.monotonic() < deadline:
        total = _instance_total(prometheus_url, worker)
        if total is not None and total >= at_least:
            return total
        time.sleep(0.5)
    raise AssertionError(f"Prometheus saw {total} photos from the worker, expected ≥ {at_least}")


def test_prometheus_scrape_shows_the_counters_moving(
    scraped_worker: tuple[WorkerProcess, Callable[[int], None]], prometheus_url: str
) -> None:
    worker, send = scraped_worker
    send(12)
    first = _wait_for_total(prometheus_url, worker, 12)
    send(12)
    second = _wait_for_total(prometheus_url, worker, first + 12)
    assert second >= first + 12


def test_dashboards_exist() -> None:
    assert DASHBOARDS, "no dashboard JSON in deploy/grafana/"


@pytest.mark.parametrize(("dashboard", "title", "expr"), panel_queries())
def test_panel_query_is_accepted_by_prometheus(
    scraped_worker: tuple[WorkerProcess, Callable[[int], None]],
    prometheus_url: str,
    dashboard: str,
    title: str,
    expr: str,
) -> None:
    worker, send = scraped_worker
    if _instance_total(prometheus_url, worker) is None:
        send(12)
        _wait_for_total(prometheus_url, worker, 1)
    answer = query(prometheus_url, expand(expr))
    assert answer["status"] == "success", f"{dashboard} / {title}: {answer.get('error')}"
    if title in PANELS_WITH_DATA:
        _wait_for_data(prometheus_url, expand(expr), f"{dashboard} / {title}")


def _wait_for_data(prometheus_url: str, expr: str, where: str, timeout_s: float = 30.0) -> None:
    """Rates need two scrapes after the counters moved: give Prometheus a few intervals."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if query(prometheus_url, expr)["data"]["result"]:
            return
        time.sleep(1.0)
    raise AssertionError(f"{where}: no data for {expr}")
