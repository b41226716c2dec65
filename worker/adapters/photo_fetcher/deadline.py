"""An overall deadline for one HTTP fetch, and the urllib opener that honours it.

A socket timeout bounds each read, not the fetch: a host that sends one byte a second never
trips it, and held a batch for 400 s. :class:`FetchDeadline` arms a timer for the whole fetch;
when it fires it shuts the fetch's socket down, which wakes whatever read is blocked on it
(in the TLS handshake, the headers or the body) with an end of file. The reader then sees
:attr:`FetchDeadline.expired` and refuses the fetch. Name resolution is the one step it cannot
cut short (the resolver's own timeouts bound it).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

_SocketSource = Callable[[], socket.socket | None]
#: Opens the TCP connection of a fetch: (host, port, timeout) -> connected socket.
Connector = Callable[[str, int, "float | None"], socket.socket]


class FetchDeadline:
    """The time budget of one fetch; use as a context manager around the whole fetch.

    Attributes:
        seconds: The budget.
        connector: What opens the fetch's TCP connection (None: ``socket.create_connection``);
            the address policy of :mod:`~worker.adapters.photo_fetcher.origins` goes here.
    """

    def __init__(self, seconds: float, connector: Connector | None = None) -> None:
        self.seconds = seconds
        self.connector = connector
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sources: list[_SocketSource] = []
        self._fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> FetchDeadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()

    @property
    def expired(self) -> bool:
        """Whether the budget is spent (checked between reads, and after a cut connection)."""
        return self._fired or time.monotonic() >= self._ends

    def request(self, uri: str, headers: Mapping[str, str]) -> urllib.request.Request:
        """Build the request for this fetch; the opener of :func:`deadline_opener` watches it."""
        return _DeadlineRequest(uri, dict(headers), self)

    def watch(self, source: _SocketSource) -> None:
        """Shut down the socket that ``source`` returns when the deadline fires (or now if it has).

        Args:
            source: Returns the socket to cut, or ``None``; called when the deadline fires, so
                that it can name a socket that is replaced meanwhile (TLS wraps the TCP socket).
        """
        with self._lock:
            self._sources.append(source)
            fired = self._fired
        if fired:
            _shut_down(source())

    def cut(self) -> None:
        """Spend the budget now: the fetch's socket is shut down and the fetch fails."""
        self._fire()

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            sources = list(self._sources)
        for source in sources:
            _shut_down(source())


def deadline_opener(context: ssl.SSLContext) -> urllib.request.OpenerDirector:
    """Build an opener whose connections obey their request's :class:`FetchDeadline`.

    Redirects are refused rather than followed (they could lead to a host that is not allowed),
    and proxies from the environment are not used (the address checked must be the one
    connected to).

    Args:
        context: The TLS settings for ``https://``.

    Returns:
        The opener; it can be shared by threads (the deadline travels with each request).
    """
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        _NoRedirect,
        _DeadlineHTTPHandler,
        _DeadlineHTTPSHandler(context),
    )


def _shut_down(sock: socket.socket | None) -> None:
    if sock is None:
        return
    # The plain socket's shutdown also for TLS: SSLSocket.shutdown would drop the TLS state under
    # a read in progress in another thread. OSError: already closed, the fetch is over.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _DeadlineRequest(urllib.request.Request):
    def __init__(self, uri: str, headers: dict[str, str], deadline: FetchDeadline) -> None:
        super().__init__(uri, headers=headers)
        self.deadline = deadline


def _deadline_of(request: urllib.request.Request) -> FetchDeadline:
    if not isinstance(request, _DeadlineRequest):
        raise TypeError("build the request with FetchDeadline.request")
    return request.deadline


def _use_connector(connection: http.client.HTTPConnection, deadline: FetchDeadline) -> None:
    """Make ``connection`` open its socket with the deadline's connector (before any byte of
    HTTP or TLS is sent)."""
    connector = deadline.connector
    if connector is None:
        return

    def create_connection(
        address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        return connector(address[0], address[1], timeout)

    connection._create_connection = create_connection  # type: ignore[attr-defined]


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, deadline: FetchDeadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        _use_connector(self, deadline)

    def connect(self) -> None:
        _connect_watched(self, super().connect, self._deadline)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, deadline: FetchDeadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        _use_connector(self, deadline)

    def connect(self) -> None:
        _connect_watched(self, super().connect, self._deadline)


def _connect_watched(
    connection: http.client.HTTPConnection, connect: Callable[[], None], deadline: FetchDeadline
) -> None:
    # Whatever socket the connection holds when the deadline fires (the TCP one during the TLS
    # handshake), then the connected one itself: urllib takes it off the connection once the
    # headers are read, while the body is still to come.
    deadline.watch(lambda: connection.sock)
    connect()
    connected = connection.sock
    deadline.watch(lambda: connected)


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_WatchedHTTPConnection, deadline=_deadline_of(req))
        return self.do_open(connection, req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._tls = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(_WatchedHTTPSConnection, deadline=_deadline_of(req))
        return self.do_open(connection, req, context=self._tls)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> None:
        if isinstance(fp, io.IOBase):
            fp.close()  # the redirect's own response, not needed
        # The message names no remote text (the Location header is the remote's).
        raise urllib.error.HTTPError(
            req.full_url,
            code,
            "redirect refused",
            headers,  # type: ignore[arg-type]
            None,
        )
