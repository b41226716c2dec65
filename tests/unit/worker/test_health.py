"""Liveness/readiness flags and the status HTTP endpoint."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from worker.observability.health import HealthState, ReadinessLimits
from worker.observability.metrics import WorkerMetrics
from worker.observability.status_server import MAX_CONNECTIONS, StatusServer


def ready_state() -> HealthState:
    state = HealthState()
    state.set_loaded(model=True, gallery=True)
    state.set_partitions(frozenset({("images", 0)}))
    state.unblock()
    return state


def test_ready_once_model_gallery_and_partitions_are_there() -> None:
    assert ready_state().readiness()[0] is True


def test_not_ready_without_partitions() -> None:
    state = ready_state()
    state.set_partitions(frozenset())
    assert state.readiness()[0] is False


def test_not_ready_while_blocked() -> None:
    state = ready_state()
    state.block("backing off after kafka")
    ok, detail = state.readiness()
    assert (ok, detail["blocked"]) == (False, "backing off after kafka")


def test_not_ready_before_the_model_is_loaded() -> None:
    state = HealthState()
    state.set_partitions(frozenset({("images", 0)}))
    state.unblock()
    assert state.readiness()[0] is False


def test_liveness_fails_when_the_loop_stalls() -> None:
    now = [0.0]
    state = HealthState(stall_after_s=10.0, clock=lambda: now[0])
    now[0] = 11.0
    assert state.liveness()[0] is False
    state.beat()
    assert state.liveness()[0] is True


@pytest.fixture
def server() -> Iterator[tuple[StatusServer, HealthState, WorkerMetrics]]:
    state, metrics = HealthState(), WorkerMetrics()
    status = StatusServer("127.0.0.1", 0, state, metrics.registry).start()
    yield status, state, metrics
    status.stop()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_readyz_answers_503_then_200(
    server: tuple[StatusServer, HealthState, WorkerMetrics],
) -> None:
    status, state, _ = server
    assert get(status.port, "/readyz")[0] == 503
    state.set_loaded(model=True, gallery=True)
    state.set_partitions(frozenset({("images", 3)}))
    state.unblock()
    code, body = get(status.port, "/readyz")
    assert (code, json.loads(body)["partitions"]) == (200, ["images-3"])


def test_healthz_answers_200_while_the_loop_beats(
    server: tuple[StatusServer, HealthState, WorkerMetrics],
) -> None:
    assert get(server[0].port, "/healthz")[0] == 200


def test_metrics_are_served_in_the_prometheus_format(
    server: tuple[StatusServer, HealthState, WorkerMetrics],
) -> None:
    status, _, metrics = server
    metrics.observe_outcomes(2, 1, ["undecodable_image"])
    code, body = get(status.port, "/metrics")
    text = body.decode()
    assert code == 200
    assert 'landmark_worker_images_total{outcome="tagged",reason=""} 2.0' in text
    assert (
        'landmark_worker_images_total{outcome="dead_lettered",reason="undecodable_image"} 1.0'
        in text
    )


def test_unknown_path_is_404(server: tuple[StatusServer, HealthState, WorkerMetrics]) -> None:
    assert get(server[0].port, "/nope")[0] == 404


def _idle_connections(port: int, count: int) -> list[socket.socket]:
    connections = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=5)
        connections.append(connection)
    return connections


def test_idle_connections_do_not_pile_up_threads(
    server: tuple[StatusServer, HealthState, WorkerMetrics],
) -> None:
    """100 clients that connect and send nothing hold at most MAX_CONNECTIONS threads."""
    before = threading.active_count()
    connections = _idle_connections(server[0].port, 100)
    try:
        time.sleep(0.5)
        assert threading.active_count() - before <= MAX_CONNECTIONS
    finally:
        for connection in connections:
            connection.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get(server[0].port, "/healthz")[0] == 200


def test_a_silent_connection_is_closed_after_the_timeout() -> None:
    status = StatusServer("127.0.0.1", 0, HealthState(), WorkerMetrics().registry, timeout_s=0.3)
    status.start()
    try:
        (connection,) = _idle_connections(status.port, 1)
        with connection:
            connection.settimeout(5)
            started = time.monotonic()
            assert connection.recv(1) == b""
            assert time.monotonic() - started < 3
    finally:
        status.stop()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def progressing(clock: FakeClock) -> HealthState:
    state = HealthState(
        limits=ReadinessLimits(loop_within_s=60, stage_within_s=30, failure_memory_s=30),
        clock=clock,
    )
    state.set_loaded(model=True, gallery=True)
    state.set_partitions(frozenset({("images", 0)}))
    state.unblock()
    return state


def reasons(state: HealthState) -> object:
    return state.readiness()[1]["not_ready_because"]


def test_not_ready_when_the_loop_has_not_turned_within_its_bound(clock: FakeClock) -> None:
    state = progressing(clock)
    clock.now = 61
    assert (state.readiness()[0], reasons(state)) == (False, ["loop has not turned for 61 s"])
    state.beat()
    assert state.readiness()[0] is True


def test_not_ready_while_one_stage_runs_past_its_bound(clock: FakeClock) -> None:
    """A search that hangs (a frozen Milvus) while the loop is otherwise fine."""
    state = progressing(clock)
    state.enter_stage("search")
    clock.now = 25
    state.beat()
    assert state.readiness()[0] is True
    clock.now = 31
    assert reasons(state) == ["stage search running for 31 s"]
    state.enter_stage("vote")
    assert state.readiness()[0] is True


def test_not_ready_while_a_dependency_fails_until_a_call_to_it_succeeds(clock: FakeClock) -> None:
    state = progressing(clock)
    state.failed("milvus", "search: gallery_timeout")
    ok, detail = state.readiness()
    assert (ok, detail["failing"]) == (False, {"milvus": "search: gallery_timeout"})
    clock.now = 5
    state.succeeded("milvus", "search")
    assert state.readiness()[0] is True


def test_a_failure_no_longer_counts_after_the_failure_memory(clock: FakeClock) -> None:
    state = progressing(clock)
    state.failed("kafka", "the group coordinator does not answer")
    clock.now = 31
    state.beat()
    assert state.readiness()[0] is True


def test_readiness_tells_when_the_last_search_and_commit_succeeded(clock: FakeClock) -> None:
    state = progressing(clock)
    assert state.readiness()[1]["seconds_since_search"] is None
    state.succeeded("milvus", "search")
    clock.now = 4
    state.succeeded("kafka", "commit")
    clock.now = 10
    detail = state.readiness()[1]
    assert (detail["seconds_since_search"], detail["seconds_since_commit"]) == (10, 6)
