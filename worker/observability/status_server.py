"""The ``/metrics``, ``/healthz`` and ``/readyz`` endpoint: one small threaded HTTP server.

One server, so that a container probe and a Prometheus scrape share a port. What the probes
answer is :class:`worker.observability.health.HealthState`'s.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.observability.health import HealthState

#: Connections served at once; more are closed at once, so idle clients cannot pile up threads.
MAX_CONNECTIONS = 32
#: An idle or trickling connection is closed after this long without a whole request.
CONNECTION_TIMEOUT_S = 5.0


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them; extra connections are closed."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = (
        128  # the listen backlog (socketserver's 5 makes bursts wait for SYN retries)
    )

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int,
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class StatusServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` from a daemon thread.

    Each connection is served by a thread of its own, at most ``max_connections`` at once (more
    are closed unanswered) and each for at most ``timeout_s`` without a whole request, so that idle
    or slow clients cannot make the worker pile up threads.

    Args:
        host: address to bind.
        port: port to bind; 0 picks a free one (see :attr:`port`).
        state: the health flags.
        registry: the Prometheus registry to expose.
        max_connections: connections served at once.
        timeout_s: how long a connection may stay silent.
    """

    def __init__(
        self,
        host: str,
        port: int,
        state: HealthState,
        registry: CollectorRegistry,
        max_connections: int = MAX_CONNECTIONS,
        timeout_s: float = CONNECTION_TIMEOUT_S,
    ) -> None:
        handler = _handler_for(state, registry, timeout_s)
        self._server = _BoundedHTTPServer((host, port), handler, max_connections)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> StatusServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(
    state: HealthState, registry: CollectorRegistry, timeout_s: float
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = timeout_s  # socketserver sets it on the connection: idle clients are dropped

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, detail = state.liveness() if path == "/healthz" else state.readiness()
                body = json.dumps({"ok": ok, **detail}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the prober gave up waiting; nothing to answer

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would drown the worker's own logs."""

    return Handler
