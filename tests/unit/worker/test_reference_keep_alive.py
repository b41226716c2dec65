"""ReferenceFetcher keeps HTTP connections open and reuses them, and never reuses a broken one.

A real HTTP/1.1 server on loopback counts the connections it accepts; each test reads that count
to see whether a fetch reused a connection or opened one.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from schemas.errors import InputError, ReasonCode
from tests.tls import serve_tls, throwaway_certificate
from worker.adapters.photo_fetcher import FetcherSettings, ReferenceFetcher
from worker.adapters.photo_fetcher.connections import ConnectionPool, Endpoint

PHOTO = b"\xff\xd8\xff" + b"k" * 2000


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _KeepAliveHandler)
        self.connections = 0
        self.lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _CountingServer

    def setup(self) -> None:
        super().setup()
        self.served = 0
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self) -> None:
        if self.path == "/once.jpg" and self.served:
            self.close_connection = True  # the request met a connection closing: no reply
            return
        if self.path == "/never.jpg":
            self.close_connection = True
            return
        self.served += 1
        status = 404 if self.path == "/missing.jpg" else 200
        body = PHOTO if status == 200 else b"no such photo"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/close.jpg":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/then-drop.jpg":  # says nothing, closes right after the reply
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _running(server: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def store() -> Iterator[_CountingServer]:
    server = _CountingServer()
    with _running(server):
        yield server


def _fetcher(
    host: str,
    keep_alive: int = 4,
    timeout_s: float = 2.0,
    used: list[str] | None = None,
) -> ReferenceFetcher:
    return ReferenceFetcher(
        FetcherSettings(
            allowed_origins=frozenset({f"http://{host}", f"https://{host}"}),
            keep_alive=keep_alive,
            timeout_s=timeout_s,
        ),
        on_connection=(used if used is not None else []).append,
    )


def _endpoint(host: str, scheme: str = "http") -> Endpoint:
    name, port = host.split(":")
    return Endpoint(scheme, name, int(port))


def test_fetches_of_one_store_share_a_connection(store: _CountingServer) -> None:
    used: list[str] = []
    fetcher = _fetcher(store.host, used=used)
    for _ in range(5):
        assert fetcher.fetch(f"http://{store.host}/a.jpg") == PHOTO
    assert store.connections == 1
    assert used == ["new", "kept", "kept", "kept", "kept"]


def test_without_keep_alive_each_fetch_has_its_own_connection(store: _CountingServer) -> None:
    fetcher = _fetcher(store.host, keep_alive=0)
    for _ in range(3):
        assert fetcher.fetch(f"http://{store.host}/a.jpg") == PHOTO
    assert store.connections == 3


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("/close.jpg", "/a.jpg", id="a-response-that-asks-to-close-is-not-kept"),
        pytest.param("/then-drop.jpg", "/a.jpg", id="a-connection-closed-while-idle-is-not-reused"),
        # The kept connection looks open and closes on the next request: that fetch goes on, once
        # more, on a new connection.
        pytest.param(
            "/once.jpg", "/once.jpg", id="a-connection-closed-as-the-request-left-is-retried"
        ),
    ],
)
def test_a_second_fetch_after_the_store_closed_the_first_connection(
    store: _CountingServer, first: str, second: str
) -> None:
    used: list[str] = []
    fetcher = _fetcher(store.host, used=used)
    assert fetcher.fetch(f"http://{store.host}{first}") == PHOTO
    assert fetcher.fetch(f"http://{store.host}{second}") == PHOTO
    assert store.connections == 2
    # A connection closed with the reply is not kept; one the store dropped after replying is
    # dropped when found closed, or retried when it closes as the request leaves; the retried
    # fetch takes the kept connection first, then a new one.
    expected = {
        "/close.jpg": [["new", "new"]],
        "/then-drop.jpg": [["new", "new"], ["new", "kept", "new"]],
        "/once.jpg": [["new", "kept", "new"]],
    }
    assert used in expected[first]


def test_a_refused_status_does_not_keep_its_connection(store: _CountingServer) -> None:
    fetcher = _fetcher(store.host)
    with pytest.raises(InputError) as refused:
        fetcher.fetch(f"http://{store.host}/missing.jpg")
    assert "HTTP status 404" in refused.value.message
    assert fetcher.fetch(f"http://{store.host}/a.jpg") == PHOTO
    assert store.connections == 2


@pytest.mark.parametrize(
    ("fetched_before", "connections"),
    [
        pytest.param(0, 1, id="a-new-connection-that-fails-is-not-retried"),
        pytest.param(1, 2, id="a-kept-connection-that-fails-is-retried-only-once"),
    ],
)
def test_a_store_that_closes_without_a_reply(
    store: _CountingServer, fetched_before: int, connections: int
) -> None:
    fetcher = _fetcher(store.host)
    for _ in range(fetched_before):
        assert fetcher.fetch(f"http://{store.host}/a.jpg") == PHOTO
    with pytest.raises(InputError) as refused:
        fetcher.fetch(f"http://{store.host}/never.jpg")
    assert refused.value.reason is ReasonCode.REFERENCE_UNREACHABLE
    assert "RemoteDisconnected" in refused.value.message
    assert store.connections == connections


def test_a_malformed_path_is_refused_before_connecting(store: _CountingServer) -> None:
    with pytest.raises(InputError) as refused:
        _fetcher(store.host).fetch(f"http://{store.host}/a\x01b.jpg")
    assert refused.value.reason is ReasonCode.BAD_REFERENCE
    assert store.connections == 0


def test_another_port_of_the_same_host_gets_its_own_connection() -> None:
    first, second = _CountingServer(), _CountingServer()
    with _running(first), _running(second):
        fetcher = ReferenceFetcher(
            FetcherSettings(
                allowed_origins=frozenset({f"http://{first.host}", f"http://{second.host}"})
            )
        )
        assert fetcher.fetch(f"http://{first.host}/a.jpg") == PHOTO
        assert fetcher.fetch(f"http://{second.host}/a.jpg") == PHOTO
        assert fetcher.fetch(f"http://{first.host}/a.jpg") == PHOTO
    assert (first.connections, second.connections) == (1, 1)


def test_a_fetch_cut_short_does_not_keep_its_connection(store: _CountingServer) -> None:
    fetcher = _fetcher(store.host)
    original = http.client.HTTPResponse.read

    def read_then_cut(response: http.client.HTTPResponse, amount: int | None = None) -> bytes:
        fetcher.abort_in_flight()  # the loop gives up on the batch while the body is read
        return original(response, amount)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http.client.HTTPResponse, "read", read_then_cut)
        with pytest.raises(InputError) as refused:
            fetcher.fetch(f"http://{store.host}/a.jpg")
    assert refused.value.reason is ReasonCode.REFERENCE_UNREACHABLE
    assert fetcher.fetch(f"http://{store.host}/a.jpg") == PHOTO
    assert store.connections == 2


def test_fetches_over_tls_share_a_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = throwaway_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # OpenSSL's default trust store
    server = _CountingServer()
    serve_tls(server, cert, key)
    with _running(server):
        fetcher = _fetcher(server.host)
        for _ in range(4):
            assert fetcher.fetch(f"https://{server.host}/a.jpg") == PHOTO
    assert server.connections == 1


# -- the pool itself -----------------------------------------------------------------------


def _connected(endpoint: Endpoint) -> tuple[http.client.HTTPConnection, socket.socket]:
    """A connection holding one end of a socket pair; returns it and the other end."""
    ours, theirs = socket.socketpair()
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port)
    connection.sock = ours
    return connection, theirs


def test_the_pool_keeps_no_more_than_its_share_per_endpoint() -> None:
    pool = ConnectionPool(ssl.create_default_context(), per_endpoint=2)
    endpoint = _endpoint("127.0.0.1:8080")
    pairs = [_connected(endpoint) for _ in range(3)]
    for connection, _ in pairs:
        pool.give_back(endpoint, connection)
    assert pool.idle_count(endpoint) == 2
    assert pairs[2][0].sock is None  # the third was closed
    assert pool.take(endpoint) is pairs[1][0]  # the most recently used first
    assert pool.take(_endpoint("127.0.0.1:8081")) is None
    pool.close()
    assert pool.idle_count(endpoint) == 0
    assert pairs[0][0].sock is None


def test_the_pool_drops_a_connection_closed_by_the_other_side() -> None:
    pool = ConnectionPool(ssl.create_default_context(), per_endpoint=2)
    endpoint = _endpoint("127.0.0.1:8080")
    connection, theirs = _connected(endpoint)
    pool.give_back(endpoint, connection)
    theirs.close()
    assert pool.take(endpoint) is None
    assert connection.sock is None


def test_the_pool_drops_a_connection_with_bytes_nobody_asked_for() -> None:
    pool = ConnectionPool(ssl.create_default_context(), per_endpoint=2)
    endpoint = _endpoint("127.0.0.1:8080")
    connection, theirs = _connected(endpoint)
    pool.give_back(endpoint, connection)
    theirs.sendall(b"HTTP/1.1 200 OK\r\n")  # a reply to no request: the stream is out of step
    assert pool.take(endpoint) is None
    theirs.close()


def test_the_pool_drops_a_connection_idle_for_too_long() -> None:
    now = [100.0]
    pool = ConnectionPool(ssl.create_default_context(), 2, idle_s=30.0, clock=lambda: now[0])
    endpoint = _endpoint("127.0.0.1:8080")
    fresh, theirs = _connected(endpoint)
    pool.give_back(endpoint, fresh)
    now[0] += 29.0
    assert pool.take(endpoint) is fresh
    pool.give_back(endpoint, fresh)
    now[0] += 31.0
    assert pool.take(endpoint) is None
    assert fresh.sock is None
    theirs.close()


def test_a_connection_with_a_descriptor_above_1024_is_still_reused() -> None:
    """select() cannot watch descriptors of 1024 and above; a busy worker may have them."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1500:
        pytest.skip(f"the descriptor limit here is {soft}")
    pool = ConnectionPool(ssl.create_default_context(), per_endpoint=2)
    endpoint = _endpoint("127.0.0.1:8080")
    low, theirs = socket.socketpair()
    high = socket.socket(fileno=os.dup2(low.fileno(), 1500))
    low.close()
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port)
    connection.sock = high
    pool.give_back(endpoint, connection)
    assert pool.take(endpoint) is connection
    high.close()
    theirs.close()


def test_a_connection_that_is_not_connected_is_not_kept() -> None:
    pool = ConnectionPool(ssl.create_default_context(), per_endpoint=2)
    endpoint = _endpoint("127.0.0.1:8080")
    pool.give_back(endpoint, http.client.HTTPConnection("127.0.0.1", 8080))
    assert pool.idle_count(endpoint) == 0


def test_a_negative_share_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_alive must be >= 0"):
        FetcherSettings(keep_alive=-1)
