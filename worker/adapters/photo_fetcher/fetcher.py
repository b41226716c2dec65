"""Resolves photo references (``file://`` and ``http(s)://`` URIs) to bytes, safely.

A reference is untrusted input: a ``file://`` URI may only name a regular file under the configured
root (no escaping it with ``..`` or symlinks, no FIFO or device to block on), an ``http(s)://`` URI
must match an allowed origin (scheme, host and port) and connect to a public address unless
the operator opened a network (:mod:`~worker.adapters.photo_fetcher.origins`), reads are bounded in size and each HTTP fetch in total time.
HTTP connections are kept open and reused by later fetches of the same endpoint
(:mod:`~worker.adapters.photo_fetcher.connections`).
Every failure is an :class:`~schemas.errors.InputError` whose message describes what went wrong
without quoting the remote's bytes or the credentials a URI may carry, so the core turns it into a dead letter instead of an
exception that stops the worker.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from configuration.redaction import redact_text, redact_uri
from schemas.errors import InputError, ReasonCode
from worker.adapters.photo_fetcher.connections import ConnectionPool, Endpoint
from worker.adapters.photo_fetcher.deadline import FetchDeadline
from worker.adapters.photo_fetcher.http_get import (
    describe_failure,
    get_photo,
    too_large,
    unreachable,
)
from worker.adapters.photo_fetcher.origins import DEFAULT_PORTS, OriginPolicy, RefusedAddress
from worker.adapters.photo_fetcher.regular_files import (
    FileTooLargeError,
    NotARegularFileError,
    read_regular_file,
)


@dataclass(frozen=True)
class FetcherSettings:
    """Where references may point and how much may be read.

    Attributes:
        file_root: directory that ``file://`` references must lie under; ``None`` refuses them all.
        allowed_origins: ``scheme://host:port`` (or ``:first-last``) entries that ``http(s)://``
            references must match (:mod:`worker.adapters.photo_fetcher.origins`); empty
            refuses them all.
        private_networks: non-public networks (CIDR) a reference's host may resolve to.
        max_bytes: largest photo accepted, in bytes.
        timeout_s: the whole budget of one ``http(s)://`` fetch (connecting, the response's
            headers and its body together), in seconds.
        keep_alive: idle connections kept open per endpoint (scheme, host, port) for later
            fetches, about the number of threads that fetch at once; 0: each fetch opens its own
            connection and closes it.
    """

    file_root: Path | None = None
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    private_networks: frozenset[str] = field(default_factory=frozenset)
    max_bytes: int = 32 * 1024 * 1024
    timeout_s: float = 5.0
    keep_alive: int = 8

    def __post_init__(self) -> None:
        if self.keep_alive < 0:
            raise ValueError(f"keep_alive must be >= 0, not {self.keep_alive}")


class ReferenceFetcher:
    """A :class:`worker.ports.PhotoFetcher` for ``file://`` and ``http(s)://`` references."""

    def __init__(
        self, settings: FetcherSettings, on_connection: Callable[[str], None] = lambda how: None
    ) -> None:
        """``on_connection`` is told ``"new"`` or ``"kept"`` for each connection a fetch uses.

        Raises:
            ValueError: an allowed origin or private network that does not parse."""
        self._settings = settings
        self._policy = OriginPolicy.parse(settings.allowed_origins, settings.private_networks)
        self._root = settings.file_root.resolve() if settings.file_root is not None else None
        self._connections = ConnectionPool(
            ssl.create_default_context(), settings.keep_alive, on_use=on_connection
        )
        self._lock = threading.Lock()
        self._in_flight: set[FetchDeadline] = set()

    def abort_in_flight(self) -> None:
        """Cut short the http(s) fetches in progress: each fails as over its budget at once.

        The loop calls it when it gives up waiting for a batch's fetches (its fetch budget is
        spent, or the worker is stopping), so that the decoding threads are free again.
        """
        with self._lock:
            in_flight = list(self._in_flight)
        for deadline in in_flight:
            deadline.cut()

    def fetch(self, uri: str) -> bytes:
        """Return the bytes behind ``uri``.

        Raises:
            InputError: ``bad_reference`` for a malformed or disallowed URI (a port out of range,
                a file outside the root, a FIFO, device, socket or directory),
                ``reference_unreachable`` when an allowed location cannot be read (missing file,
                HTTP error or protocol error, a body shorter than its Content-Length, a fetch over
                its time budget), ``image_too_large`` for a photo over the size limit.
        """
        shown = redact_uri(uri)  # what messages (logs, dead letters) may say of it
        try:
            parts = urllib.parse.urlsplit(uri)
            # Parsed lazily by urllib; a port out of range or not a number raises only here.
            port = parts.port
        except ValueError as error:
            raise InputError(
                ReasonCode.BAD_REFERENCE, f"malformed URI {shown!r}: {redact_text(str(error))}"
            ) from None
        scheme = parts.scheme.lower()
        if scheme == "file":
            return self._fetch_file(parts, shown)
        if scheme in ("http", "https"):
            return self._fetch_http(parts, port, uri, shown)
        raise InputError(
            ReasonCode.BAD_REFERENCE, f"unsupported URI scheme {parts.scheme!r} in {shown!r}"
        )

    def _fetch_file(self, parts: urllib.parse.SplitResult, uri: str) -> bytes:
        if self._root is None:
            raise InputError(ReasonCode.BAD_REFERENCE, "file:// references are not enabled")
        if parts.netloc not in ("", "localhost"):
            raise InputError(ReasonCode.BAD_REFERENCE, f"file URI names a remote host: {uri!r}")
        raw_path = urllib.parse.unquote(parts.path)
        if "\x00" in raw_path or not raw_path.startswith("/"):
            raise InputError(ReasonCode.BAD_REFERENCE, f"file URI needs an absolute path: {uri!r}")
        path = Path(raw_path).resolve()
        if not path.is_relative_to(self._root):
            raise InputError(
                ReasonCode.BAD_REFERENCE, f"file reference outside the allowed root: {uri!r}"
            )
        try:
            data = read_regular_file(
                self._root, path.relative_to(self._root), self._settings.max_bytes
            )
        except FileTooLargeError as error:
            raise too_large(uri, error.size, self._settings.max_bytes) from None
        except NotARegularFileError as error:
            raise InputError(
                ReasonCode.BAD_REFERENCE, f"file reference is not a regular file ({error}): {uri!r}"
            ) from None
        except OSError as error:
            raise InputError(
                ReasonCode.REFERENCE_UNREACHABLE, f"cannot read {uri!r}: {error.strerror or error}"
            ) from None
        return data

    def _fetch_http(
        self, parts: urllib.parse.SplitResult, port: int | None, uri: str, shown: str
    ) -> bytes:
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        origin = self._policy.origin_for(scheme, host, port) if host else None
        if origin is None:
            where = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
            raise InputError(
                ReasonCode.BAD_REFERENCE, f"origin {where!r} is not allowed: {shown!r}"
            )
        endpoint = Endpoint(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        budget = self._settings.timeout_s
        connect = functools.partial(self._policy.connect, origin)
        try:
            with FetchDeadline(budget) as deadline, self._tracked(deadline):
                data, connection = get_photo(
                    self._connections,
                    endpoint,
                    target,
                    connect,
                    deadline,
                    shown,
                    self._settings.max_bytes,
                )
        except InputError:
            raise
        except RefusedAddress as error:
            raise InputError(ReasonCode.BAD_REFERENCE, f"{error}: {shown!r}") from None
        except (http.client.InvalidURL, ValueError):  # what urlsplit let through: control bytes
            raise InputError(ReasonCode.BAD_REFERENCE, f"malformed URI {shown!r}") from None
        except (http.client.HTTPException, OSError) as error:
            if deadline.expired:
                raise unreachable(shown, f"took longer than {budget:g} s") from None
            raise unreachable(shown, describe_failure(error)) from None
        if deadline.expired:  # its socket may have been shut down as the body ended
            connection.close()
        else:
            self._connections.give_back(endpoint, connection)
        return data

    @contextlib.contextmanager
    def _tracked(self, deadline: FetchDeadline) -> Iterator[None]:
        with self._lock:
            self._in_flight.add(deadline)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.discard(deadline)
