"""Resolves photo references (``file://`` and ``http(s)://`` URIs) to bytes, safely.

A reference is untrusted input: a ``file://`` URI may only name a regular file under the configured
root (no escaping it with ``..`` or symlinks, no FIFO or device to block on), an ``http(s)://`` URI
may only name a configured host, reads are bounded in size and time. Every failure is an
:class:`~schemas.errors.InputError`, so the core turns it into a dead letter instead of an
exception that stops the worker.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import InputError, ReasonCode
from worker.adapters.photo_fetcher.regular_files import (
    FileTooLargeError,
    NotARegularFileError,
    read_regular_file,
)

_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetcherSettings:
    """Where references may point and how much may be read.

    Attributes:
        file_root: directory that ``file://`` references must lie under; ``None`` refuses them all.
        allowed_hosts: host names (lower case, optionally ``host:port``) that ``http(s)://``
            references may name; empty refuses them all.
        max_bytes: largest photo accepted, in bytes.
        timeout_s: connect/read timeout for HTTP.
    """

    file_root: Path | None = None
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    max_bytes: int = 32 * 1024 * 1024
    timeout_s: float = 5.0


class ReferenceFetcher:
    """A :class:`worker.ports.PhotoFetcher` for ``file://`` and ``http(s)://`` references."""

    def __init__(self, settings: FetcherSettings) -> None:
        self._settings = settings
        self._root = settings.file_root.resolve() if settings.file_root is not None else None
        # Redirects could lead to a host that is not allowed; refuse them rather than follow.
        self._opener = urllib.request.build_opener(_NoRedirect)

    def fetch(self, uri: str) -> bytes:
        """Return the bytes behind ``uri``.

        Raises:
            InputError: ``bad_reference`` for a malformed or disallowed URI (a file outside the
                root, a FIFO, device, socket or directory),
                ``reference_unreachable`` when an allowed location cannot be read (missing file,
                HTTP error, timeout), ``image_too_large`` for a photo over the size limit.
        """
        try:
            parts = urllib.parse.urlsplit(uri)
        except ValueError as error:
            raise InputError(ReasonCode.BAD_REFERENCE, f"malformed URI {uri!r}: {error}") from error
        scheme = parts.scheme.lower()
        if scheme == "file":
            return self._fetch_file(parts, uri)
        if scheme in ("http", "https"):
            return self._fetch_http(parts, uri)
        raise InputError(
            ReasonCode.BAD_REFERENCE, f"unsupported URI scheme {parts.scheme!r} in {uri!r}"
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
            raise _too_large(uri, error.size, self._settings.max_bytes) from None
        except NotARegularFileError as error:
            raise InputError(
                ReasonCode.BAD_REFERENCE, f"file reference is not a regular file ({error}): {uri!r}"
            ) from None
        except OSError as error:
            raise InputError(
                ReasonCode.REFERENCE_UNREACHABLE, f"cannot read {uri!r}: {error.strerror or error}"
            ) from None
        return data

    def _fetch_http(self, parts: urllib.parse.SplitResult, uri: str) -> bytes:
        host = (parts.hostname or "").lower()
        host_port = f"{host}:{parts.port}" if parts.port is not None else host
        allowed = self._settings.allowed_hosts
        if not host or (host not in allowed and host_port not in allowed):
            raise InputError(
                ReasonCode.BAD_REFERENCE, f"host {host_port!r} is not allowed: {uri!r}"
            )
        request = urllib.request.Request(uri, headers={"User-Agent": "landmark-worker"})
        try:
            with self._opener.open(request, timeout=self._settings.timeout_s) as response:
                declared = response.headers.get("Content-Length")
                if (
                    declared is not None
                    and declared.isdigit()
                    and (int(declared) > self._settings.max_bytes)
                ):
                    raise _too_large(uri, int(declared), self._settings.max_bytes)
                data = _read_bounded(response, self._settings.max_bytes)
        except InputError:
            raise
        except urllib.error.HTTPError as error:
            raise InputError(
                ReasonCode.REFERENCE_UNREACHABLE, f"HTTP {error.code} for {uri!r}"
            ) from error
        except (TimeoutError, urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise InputError(
                ReasonCode.REFERENCE_UNREACHABLE, f"cannot fetch {uri!r}: {reason}"
            ) from error
        if data is None:
            raise _too_large(uri, None, self._settings.max_bytes)
        return data


def _read_bounded(response: object, max_bytes: int) -> bytes | None:
    """Read at most ``max_bytes``; ``None`` when the body is longer."""
    chunks: list[bytes] = []
    total = 0
    read = response.read  # type: ignore[attr-defined]
    while True:
        chunk: bytes = read(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            return None
        chunks.append(chunk)


def _too_large(uri: str, size: int | None, limit: int) -> InputError:
    size_text = f"{size} bytes" if size is not None else "more bytes"
    return InputError(
        ReasonCode.IMAGE_TOO_LARGE, f"referenced photo has {size_text}, limit {limit}: {uri!r}"
    )


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
        raise urllib.error.HTTPError(
            req.full_url,
            code,
            f"redirect to {newurl} refused",
            headers,  # type: ignore[arg-type]
            None,
        )
