"""One HTTP GET of a photo: on a kept connection or a new one, within a deadline and a size limit.

The checks of the reference itself (origin, address) are the fetcher's; this module speaks the
protocol: it refuses every status but 2xx (redirects are not followed: they could lead to a host
that is not allowed), a body over the size limit or shorter than its Content-Length, and says
what failed without quoting a byte the remote sent.
"""

from __future__ import annotations

import http.client
import re
import ssl

from schemas.errors import InputError, ReasonCode
from worker.adapters.photo_fetcher.connections import ConnectionPool, Connector, Endpoint
from worker.adapters.photo_fetcher.deadline import FetchDeadline

#: Bytes asked of the response at a time (the deadline is checked between reads): 256 KiB
#: costs a 1.4 MB photo 0.59-0.64 ms of CPU against 0.69-0.77 ms at 64 KiB (``bench_loop.py
#: --photos http``, kept connections).
_READ_CHUNK = 256 * 1024
_DIGITS = re.compile(r"[0-9]{1,18}")
#: How a kept connection fails when the store closed it while it was idle (before any byte
#: of the response): the fetch is retried once on a new connection.
_CLOSED_WHILE_IDLE = (
    ConnectionResetError,  # http.client.RemoteDisconnected included
    BrokenPipeError,
    ConnectionAbortedError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


def get_photo(
    pool: ConnectionPool,
    endpoint: Endpoint,
    target: str,
    connect: Connector,
    deadline: FetchDeadline,
    shown: str,
    max_bytes: int,
) -> tuple[bytes, http.client.HTTPConnection]:
    """GET ``target`` on a kept connection to ``endpoint`` or a new one.

    Args:
        pool: Where kept connections come from and new ones are made.
        endpoint: The scheme, host and port of the reference.
        target: The request target (path and query).
        connect: Opens a new connection's socket (the origin policy's connector).
        deadline: The fetch's whole budget; its sockets are cut when it fires.
        shown: The reference as messages may show it.
        max_bytes: The largest body accepted.

    Returns:
        The body, and the connection with its response read to the end (the caller keeps it
        or closes it); on any failure the connection is closed.

    Raises:
        InputError: ``reference_unreachable`` for a status other than 2xx, a malformed
            Content-Length or a body shorter than it, a fetch over its budget;
            ``image_too_large`` for a body over the limit.
        http.client.HTTPException, OSError: the exchange failed (the caller words it).
    """
    kept = pool.take(endpoint)
    connection = kept or pool.open(endpoint, connect, deadline.seconds)
    try:
        try:
            response = _request(connection, target, deadline)
        except _CLOSED_WHILE_IDLE:
            if kept is None or deadline.expired:
                raise
            connection.close()  # the store closed it while idle: once more, on a new one
            connection = pool.open(endpoint, connect, deadline.seconds)
            response = _request(connection, target, deadline)
        if not 200 <= response.status < 300:  # redirects included: never followed
            raise unreachable(shown, f"HTTP status {response.status}")
        data = _read_body(response, shown, max_bytes, deadline)
    except BaseException:
        connection.close()
        raise
    return data, connection


def _request(
    connection: http.client.HTTPConnection, target: str, deadline: FetchDeadline
) -> http.client.HTTPResponse:
    # A malformed target (control bytes, spaces) is refused here, before anything connects.
    # http.client asks for "Accept-Encoding: identity" itself; nothing here inflates.
    connection.putrequest("GET", target)
    connection.putheader("User-Agent", "landmark-worker")
    deadline.connect_watched(connection)
    connection.endheaders()
    return connection.getresponse()


def _read_body(
    response: http.client.HTTPResponse, uri: str, limit: int, deadline: FetchDeadline
) -> bytes:
    """Read the body within the size limit and the deadline, refusing a short body."""
    declared = _declared_length(response, uri)
    if declared is not None and declared > limit:
        raise too_large(uri, declared, limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        if deadline.expired:
            raise unreachable(uri, f"took longer than {deadline.seconds:g} s")
        chunk = response.read(_READ_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise too_large(uri, None, limit)
        chunks.append(chunk)
    if deadline.expired:  # the deadline cut the connection: what came is not the photo
        raise unreachable(uri, f"took longer than {deadline.seconds:g} s")
    if declared is not None and total != declared:
        raise unreachable(uri, f"body ended after {total} of its {declared} bytes")
    return b"".join(chunks)


def _declared_length(response: http.client.HTTPResponse, uri: str) -> int | None:
    """The Content-Length, or ``None``; a malformed one is a protocol error."""
    values = response.headers.get_all("Content-Length") or []
    if not values:
        return None
    if len(set(values)) != 1 or not _DIGITS.fullmatch(values[0].strip()):
        raise unreachable(uri, "HTTP protocol error (malformed Content-Length)")
    return int(values[0])


def describe_failure(error: BaseException) -> str:
    """Say what failed without the remote's words: exception types and local OS messages only."""
    if isinstance(error, http.client.HTTPException):
        # BadStatusLine, LineTooLong, IncompleteRead, ... carry the bytes the remote sent.
        return f"HTTP protocol error ({type(error).__name__})"
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error.reason or type(error).__name__})"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


def unreachable(uri: str, what: str) -> InputError:
    """``reference_unreachable`` for ``uri`` (as messages may show it)."""
    return InputError(ReasonCode.REFERENCE_UNREACHABLE, f"cannot fetch {uri!r}: {what}")


def too_large(uri: str, size: int | None, limit: int) -> InputError:
    """``image_too_large`` for ``uri``: ``size`` bytes (``None``: more than read) over ``limit``."""
    size_text = f"{size} bytes" if size is not None else "more bytes"
    return InputError(
        ReasonCode.IMAGE_TOO_LARGE, f"referenced photo has {size_text}, limit {limit}: {uri!r}"
    )
