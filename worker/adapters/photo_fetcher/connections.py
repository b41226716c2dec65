"""Keep-alive connections to the photo stores, reused from one fetch to the next.

Opening a connection for every photo costs a round trip (three with TLS) and, over TLS, a
handshake of ~1 ms of CPU on each side; a worker fetching hundreds of photos a second from one
store spends more on connecting than on reading. The pool keeps the connections whose response
was read whole, one list per endpoint (scheme, host, port), and hands one to the next fetch of
that endpoint. A connection is only ever opened through the fetch's connector, i.e. to an
address :mod:`~worker.adapters.photo_fetcher.origins` checked; reusing it reaches the same
checked address, so keeping it open does not open a way around the policy.

A kept connection may have been closed by the store meanwhile (idle timeouts: seconds to a
minute). The pool drops one whose socket is readable (an end of file, or bytes nobody asked for)
and one idle for longer than :data:`IDLE_S`; the fetcher retries once on a fresh connection
when a reused one fails before any response came (the store closed it as the request left).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Opens the TCP connection of a fetch: (host, port, timeout) -> connected socket.
Connector = Callable[[str, int, "float | None"], socket.socket]
#: A connection idle for longer is closed instead of reused (load balancers drop idle
#: connections after a minute by default, web servers often sooner).
IDLE_S = 30.0


@dataclass(frozen=True)
class Endpoint:
    """Where a connection leads: the scheme, the host as the reference names it, the port."""

    scheme: str
    host: str
    port: int


class _PolicyHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket comes from a connector (the origin policy's)."""

    def __init__(self, host: str, port: int, timeout: float, connector: Connector) -> None:
        super().__init__(host, port, timeout=timeout)
        _use_connector(self, connector)


class _PolicyHTTPSConnection(http.client.HTTPSConnection):
    """The same over TLS: the certificate is checked against the host the reference names."""

    def __init__(
        self, host: str, port: int, timeout: float, connector: Connector, tls: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=tls)
        _use_connector(self, connector)


def _use_connector(connection: http.client.HTTPConnection, connector: Connector) -> None:
    def create_connection(
        address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        return connector(address[0], address[1], timeout)

    connection._create_connection = create_connection  # type: ignore[attr-defined]


class ConnectionPool:
    """Idle keep-alive connections by endpoint; safe to share between fetching threads.

    Args:
        tls: The TLS settings of ``https://`` connections.
        per_endpoint: Idle connections kept for one endpoint (about the number of threads that
            fetch at once); 0 keeps none: every fetch opens and closes its own.
        idle_s: A connection idle for longer is closed rather than reused.
        clock: Monotonic seconds (tests pass their own).
        on_use: Told ``"new"`` for each connection opened and ``"kept"`` for each one handed
            out again (the worker counts them in a metric).
    """

    def __init__(
        self,
        tls: ssl.SSLContext,
        per_endpoint: int,
        idle_s: float = IDLE_S,
        clock: Callable[[], float] = time.monotonic,
        on_use: Callable[[str], None] = lambda how: None,
    ) -> None:
        if per_endpoint < 0:
            raise ValueError(f"per_endpoint must be >= 0, not {per_endpoint}")
        self._tls = tls
        self._per_endpoint = per_endpoint
        self._idle_s = idle_s
        self._clock = clock
        self._on_use = on_use
        self._lock = threading.Lock()
        self._idle: dict[Endpoint, list[tuple[float, http.client.HTTPConnection]]] = {}

    def open(
        self, endpoint: Endpoint, connector: Connector, timeout: float
    ) -> http.client.HTTPConnection:
        """A new connection to ``endpoint`` (not connected yet: the first request connects it)."""
        self._on_use("new")
        if endpoint.scheme == "https":
            return _PolicyHTTPSConnection(
                endpoint.host, endpoint.port, timeout, connector, self._tls
            )
        return _PolicyHTTPConnection(endpoint.host, endpoint.port, timeout, connector)

    def take(self, endpoint: Endpoint) -> http.client.HTTPConnection | None:
        """An idle connection to ``endpoint`` that still looks open, or ``None``.

        The most recently used comes first (the likeliest to be open still); stale ones met on
        the way are closed.
        """
        now = self._clock()
        while True:
            with self._lock:
                idle = self._idle.get(endpoint)
                if not idle:
                    return None
                since, connection = idle.pop()
            if now - since <= self._idle_s and _looks_open(connection):
                self._on_use("kept")
                return connection
            connection.close()

    def give_back(self, endpoint: Endpoint, connection: http.client.HTTPConnection) -> None:
        """Keep ``connection`` for the next fetch of ``endpoint``, or close it when the pool is full
        or the connection is no longer connected (the response asked to close it)."""
        if connection.sock is not None:
            with self._lock:
                idle = self._idle.setdefault(endpoint, [])
                if len(idle) < self._per_endpoint:
                    idle.append((self._clock(), connection))
                    return
        connection.close()

    def idle_count(self, endpoint: Endpoint) -> int:
        """How many connections to ``endpoint`` are waiting for a fetch."""
        with self._lock:
            return len(self._idle.get(endpoint, ()))

    def close(self) -> None:
        """Close every idle connection (the fetches in progress keep theirs)."""
        with self._lock:
            idle = [connection for kept in self._idle.values() for _, connection in kept]
            self._idle.clear()
        for connection in idle:
            connection.close()


def _looks_open(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection is still usable: nothing is waiting to be read on it.

    An idle keep-alive socket that is readable has been closed by the other side (an end of
    file), or carries bytes that belong to no request; either way it cannot be reused. ``poll``,
    not ``select``: a busy worker's sockets can have descriptors above ``select``'s 1024.
    """
    sock = connection.sock
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError):  # closed meanwhile
        return False
