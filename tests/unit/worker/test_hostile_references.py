"""ReferenceFetcher against hostile references: non-regular files, slow or broken HTTP hosts.

Every case must end, promptly, in an InputError with the right reason and a message that
describes the failure without quoting what the remote sent. Fetches run in a thread joined
with a timeout, so that a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePath

import pytest

from schemas.errors import InputError, ReasonCode
from tests.tls import serve_tls, throwaway_certificate
from worker.adapters.photo_fetcher import FetcherSettings, ReferenceFetcher
from worker.adapters.photo_fetcher.regular_files import (
    FileTooLargeError,
    NotARegularFileError,
    read_regular_file,
)

PHOTO = b"\xff\xd8\xff" + b"x" * 100
#: How long a fetch may run in these tests before it counts as hung.
HANG_S = 6.0
#: The trickling host sends one byte per TRICKLE_S, TRICKLE_BYTES in all (10 s).
TRICKLE_S = 0.25
TRICKLE_BYTES = 40
BANNER = b"SSH-2.0-OpenSSH_9.6 secret-banner\r\n"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"


@functools.cache
def _gzip_body() -> bytes:
    """64 MiB of zeros as a gzip stream of about 64 KiB, compressed a MiB at a time."""
    deflater = zlib.compressobj(9, wbits=31)  # 31: gzip framing
    return b"".join(deflater.compress(bytes(1 << 20)) for _ in range(64)) + deflater.flush()


def _fetch_within(fetcher: ReferenceFetcher, uri: str) -> tuple[bytes | InputError, float]:
    """Fetch in a thread; return the bytes or the InputError, and the seconds it took."""
    outcome: list[bytes | BaseException] = []

    def fetch() -> None:
        try:
            outcome.append(fetcher.fetch(uri))
        except BaseException as error:
            outcome.append(error)

    started = time.monotonic()
    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(HANG_S)
    elapsed = time.monotonic() - started
    assert outcome, f"fetch of {uri} still running after {HANG_S} s"
    result = outcome[0]
    if isinstance(result, BaseException) and not isinstance(result, InputError):
        raise result
    return result, elapsed


def _refusal(fetcher: ReferenceFetcher, uri: str) -> InputError:
    result, _ = _fetch_within(fetcher, uri)
    assert isinstance(result, InputError), f"fetched {len(result)} bytes"
    return result


# -- file:// references to things that are not regular files ------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(PHOTO)
    return folder


def _file_fetcher(root: Path) -> ReferenceFetcher:
    return ReferenceFetcher(FetcherSettings(file_root=root, max_bytes=1000))


def test_fifo_under_the_root_is_a_bad_reference_without_blocking(root: Path) -> None:
    fifo = root / "pipe.jpg"
    os.mkfifo(fifo)
    try:
        assert _refusal(_file_fetcher(root), fifo.as_uri()).reason is ReasonCode.BAD_REFERENCE
    finally:
        # Releases a reader stuck in open() (the code before the fix), so no thread is left.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_unix_socket_under_the_root_is_a_bad_reference(root: Path) -> None:
    path = root / "s.jpg"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        assert _refusal(_file_fetcher(root), path.as_uri()).reason is ReasonCode.BAD_REFERENCE


def test_directory_under_the_root_is_a_bad_reference(root: Path) -> None:
    (root / "album.jpg").mkdir()
    uri = (root / "album.jpg").as_uri()
    assert _refusal(_file_fetcher(root), uri).reason is ReasonCode.BAD_REFERENCE


def test_the_root_itself_is_a_bad_reference(root: Path) -> None:
    assert _refusal(_file_fetcher(root), root.as_uri()).reason is ReasonCode.BAD_REFERENCE


def test_symlink_to_a_photo_inside_the_root_is_still_read(root: Path) -> None:
    (root / "inner").mkdir()
    (root / "inner" / "link.jpg").symlink_to(root / "a.jpg")
    fetcher = _file_fetcher(root)
    assert fetcher.fetch((root / "inner" / "link.jpg").as_uri()) == PHOTO


@pytest.mark.parametrize("swapped", ["link.jpg", "linked/a.jpg"], ids=["file", "directory"])
def test_symlink_swapped_in_after_resolving_is_refused(root: Path, swapped: str) -> None:
    """The fetcher resolves the path first; a symlink met when opening was put there since."""
    (root / "link.jpg").symlink_to(root / "a.jpg")
    (root / "linked").symlink_to(root)
    with pytest.raises(NotARegularFileError):
        read_regular_file(root, PurePath(swapped), 1000)


@pytest.mark.parametrize(("grown_to", "limit_ok"), [(900, True), (1500, False)])
def test_a_file_that_grows_after_it_was_sized_is_read_whole_or_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch, grown_to: int, limit_ok: bool
) -> None:
    """The file is read for the size fstat gave (plus a byte); one that grew since (appended to
    while being written) is read on to its end, or refused once past the limit."""
    (root / "growing.jpg").write_bytes(PHOTO[:3] + b"y" * (grown_to - 3))
    real_fstat = os.fstat

    def fstat_before_it_grew(descriptor: int) -> os.stat_result:
        status = real_fstat(descriptor)
        fields = list(status)
        fields[6] = 100  # st_size as it was a moment ago
        return os.stat_result(fields)

    monkeypatch.setattr(os, "fstat", fstat_before_it_grew)
    if limit_ok:
        data = read_regular_file(root, PurePath("growing.jpg"), 1000)
        assert len(data) == grown_to and data.endswith(b"y")
    else:
        with pytest.raises(FileTooLargeError) as refused:
            read_regular_file(root, PurePath("growing.jpg"), 1000)
        assert refused.value.size is None


# -- http:// hosts that trickle, lie or do not speak HTTP ---------------------------------


class _HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    accept_encodings: list[str | None] = []  # noqa: RUF012 - shared with the tests on purpose

    def do_GET(self) -> None:
        replies: dict[str, Callable[[], None]] = {
            "/trickle-body.jpg": self._trickle_body,
            "/trickle-headers.jpg": self._trickle_headers,
            "/banner.jpg": lambda: self._raw(BANNER),
            "/short.jpg": lambda: self._raw(_head(100) + PHOTO[:50]),
            "/bad-length.jpg": lambda: self._raw(_head("12abc") + PHOTO),
            "/chunked-cut.jpg": lambda: self._raw(CHUNKED_HEAD + b"64\r\n" + PHOTO[:10]),
            "/gzip.jpg": self._gzip,
        }
        replies.get(self.path, lambda: self._raw(_head(len(PHOTO)) + PHOTO))()

    def _trickle_body(self) -> None:
        self._raw(_head(TRICKLE_BYTES))
        self._trickle(b"x" * TRICKLE_BYTES)

    def _trickle_headers(self) -> None:
        self._trickle(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * TRICKLE_BYTES)
        self._raw(b"\r\n" + _head(len(PHOTO))[len(b"HTTP/1.1 200 OK\r\n") :] + PHOTO)

    def _gzip(self) -> None:
        self.accept_encodings.append(self.headers.get("Accept-Encoding"))
        body = _gzip_body()
        head = _head(len(body)).replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")
        self._raw(head + body)

    def _trickle(self, data: bytes) -> None:
        for position in range(len(data)):
            self._raw(data[position : position + 1])
            time.sleep(TRICKLE_S)

    def _raw(self, data: bytes) -> None:
        self.close_connection = True  # as every reply here says ("Connection: close")
        with contextlib.suppress(OSError):  # the client gave up: fine
            self.wfile.write(data)
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _head(length: int | str) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n".encode()


@pytest.fixture(scope="module")
def hostile_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tls_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The hostile host behind TLS, with a throw-away certificate; yields it and its CA file."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = throwaway_certificate(tmp_path_factory.mktemp("tls"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileHandler)
    server.daemon_threads = True
    serve_tls(server, cert, key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


class _TricklingHandshake(socketserver.BaseRequestHandler):
    """Answers a TLS ClientHello with a record header announcing 16 KiB, then one byte at a time."""

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            self.request.sendall(b"\x16\x03\x03\x40\x00")
            for _ in range(TRICKLE_BYTES):
                time.sleep(TRICKLE_S)
                self.request.sendall(b"\x02")


@pytest.fixture(scope="module")
def trickling_tls_host() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _TricklingHandshake)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _http_fetcher(host: str, timeout_s: float = 1.0) -> ReferenceFetcher:
    return ReferenceFetcher(
        FetcherSettings(
            allowed_origins=frozenset({f"http://{host}", f"https://{host}"}),
            max_bytes=1000,
            timeout_s=timeout_s,
        )
    )


def test_well_behaved_host_is_still_fetched(hostile_host: str) -> None:
    assert _http_fetcher(hostile_host).fetch(f"http://{hostile_host}/a.jpg") == PHOTO


@pytest.mark.parametrize("path", ["/trickle-body.jpg", "/trickle-headers.jpg"])
def test_trickling_host_fails_at_the_deadline_not_the_end_of_the_trickle(
    hostile_host: str, path: str
) -> None:
    """One byte every 0.25 s for 10 s never trips a per-read timeout of 1 s; the deadline does."""
    uri = f"http://{hostile_host}{path}"
    _assert_cut_at_the_deadline(*_fetch_within(_http_fetcher(hostile_host), uri))


def _assert_cut_at_the_deadline(result: bytes | InputError, elapsed: float) -> None:
    assert isinstance(result, InputError), f"fetched {len(result)} bytes in {elapsed:.1f} s"
    assert result.reason is ReasonCode.REFERENCE_UNREACHABLE
    assert "took longer than 1 s" in result.message
    assert elapsed < 3.0


def test_trickling_tls_handshake_fails_at_the_deadline(trickling_tls_host: str) -> None:
    uri = f"https://{trickling_tls_host}/a.jpg"
    _assert_cut_at_the_deadline(*_fetch_within(_http_fetcher(trickling_tls_host), uri))


def test_trickling_body_over_tls_fails_at_the_deadline(
    tls_host: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, ca_file = tls_host
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # OpenSSL's default trust store
    fetcher = _http_fetcher(host)
    assert fetcher.fetch(f"https://{host}/a.jpg") == PHOTO
    _assert_cut_at_the_deadline(*_fetch_within(fetcher, f"https://{host}/trickle-body.jpg"))


@pytest.mark.parametrize("netloc", ["127.0.0.1:99999", "127.0.0.1:28080:80"])
def test_malformed_port_is_a_bad_reference(netloc: str) -> None:
    fetcher = _http_fetcher("127.0.0.1:28080")
    assert _refusal(fetcher, f"http://{netloc}/a.jpg").reason is ReasonCode.BAD_REFERENCE


def test_host_that_does_not_speak_http_is_unreachable_and_not_quoted(hostile_host: str) -> None:
    error = _refusal(_http_fetcher(hostile_host), f"http://{hostile_host}/banner.jpg")
    assert error.reason is ReasonCode.REFERENCE_UNREACHABLE
    assert "OpenSSH" not in error.message
    assert "secret" not in error.message


def test_body_shorter_than_its_content_length_is_unreachable(hostile_host: str) -> None:
    error = _refusal(_http_fetcher(hostile_host), f"http://{hostile_host}/short.jpg")
    assert error.reason is ReasonCode.REFERENCE_UNREACHABLE
    assert "50 of its 100 bytes" in error.message


def test_chunked_body_cut_short_is_unreachable(hostile_host: str) -> None:
    error = _refusal(_http_fetcher(hostile_host), f"http://{hostile_host}/chunked-cut.jpg")
    assert error.reason is ReasonCode.REFERENCE_UNREACHABLE


def test_malformed_content_length_is_unreachable(hostile_host: str) -> None:
    error = _refusal(_http_fetcher(hostile_host), f"http://{hostile_host}/bad-length.jpg")
    assert error.reason is ReasonCode.REFERENCE_UNREACHABLE


def test_control_character_in_the_path_is_a_bad_reference(hostile_host: str) -> None:
    fetcher = _http_fetcher(hostile_host)
    assert _refusal(fetcher, f"http://{hostile_host}/a\x01.jpg").reason is ReasonCode.BAD_REFERENCE


def test_gzip_encoded_body_is_returned_as_sent_not_inflated(hostile_host: str) -> None:
    """64 MiB of zeros sent as a 64 KiB gzip body: the fetcher never decompresses (issue #8).

    The request asks for ``identity`` (http.client's default); the body comes back as sent.
    """
    fetcher = ReferenceFetcher(
        FetcherSettings(
            allowed_origins=frozenset({f"http://{hostile_host}"}), max_bytes=1024 * 1024
        )
    )
    assert fetcher.fetch(f"http://{hostile_host}/gzip.jpg") == _gzip_body()
    assert _HostileHandler.accept_encodings[-1] == "identity"


def test_a_fetch_in_progress_is_cut_short_when_the_loop_gives_up_on_it(hostile_host: str) -> None:
    """The worker stopping (or a batch's fetch budget spent) frees the fetching thread at once."""
    fetcher = _http_fetcher(hostile_host, timeout_s=30.0)
    threading.Timer(0.5, fetcher.abort_in_flight).start()

    result, elapsed = _fetch_within(fetcher, f"http://{hostile_host}/trickle-body.jpg")

    assert isinstance(result, InputError) and result.reason is ReasonCode.REFERENCE_UNREACHABLE
    assert elapsed < 2.0
