"""ReferenceFetcher: file:// under a root, http(s):// to allowed hosts, bounded reads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from schemas.errors import InputError, ReasonCode
from worker.adapters.photo_fetcher import FetcherSettings, ReferenceFetcher

PHOTO = b"\xff\xd8\xff" + b"x" * 100


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(PHOTO)
    (tmp_path / "secret.txt").write_bytes(b"secret")
    return folder


def fetcher_for(
    root: Path | None = None,
    origins: frozenset[str] = frozenset(),
    max_bytes: int = 1000,
    timeout_s: float = 2.0,
) -> ReferenceFetcher:
    return ReferenceFetcher(
        FetcherSettings(
            file_root=root, allowed_origins=origins, max_bytes=max_bytes, timeout_s=timeout_s
        )
    )


def reason_of(fetcher: ReferenceFetcher, uri: str) -> ReasonCode:
    with pytest.raises(InputError) as caught:
        fetcher.fetch(uri)
    return caught.value.reason


def test_file_under_root_is_read(root: Path) -> None:
    assert fetcher_for(root).fetch((root / "a.jpg").as_uri()) == PHOTO


def test_file_outside_root_is_a_bad_reference(root: Path) -> None:
    assert (
        reason_of(fetcher_for(root), (root.parent / "secret.txt").as_uri())
        == ReasonCode.BAD_REFERENCE
    )


def test_dot_dot_cannot_escape_the_root(root: Path) -> None:
    assert reason_of(fetcher_for(root), f"file://{root}/../secret.txt") == ReasonCode.BAD_REFERENCE


def test_symlink_out_of_the_root_is_a_bad_reference(root: Path) -> None:
    (root / "link.jpg").symlink_to(root.parent / "secret.txt")
    assert reason_of(fetcher_for(root), (root / "link.jpg").as_uri()) == ReasonCode.BAD_REFERENCE


def test_missing_file_is_unreachable(root: Path) -> None:
    assert (
        reason_of(fetcher_for(root), (root / "gone.jpg").as_uri())
        == ReasonCode.REFERENCE_UNREACHABLE
    )


def test_file_references_are_refused_without_a_root(root: Path) -> None:
    assert reason_of(fetcher_for(None), (root / "a.jpg").as_uri()) == ReasonCode.BAD_REFERENCE


def test_file_over_the_size_limit_is_too_large(root: Path) -> None:
    assert (
        reason_of(fetcher_for(root, max_bytes=10), (root / "a.jpg").as_uri())
        == ReasonCode.IMAGE_TOO_LARGE
    )


def test_remote_file_host_is_a_bad_reference(root: Path) -> None:
    assert reason_of(fetcher_for(root), f"file://elsewhere{root}/a.jpg") == ReasonCode.BAD_REFERENCE


def test_unknown_scheme_is_a_bad_reference(root: Path) -> None:
    assert reason_of(fetcher_for(root), "ftp://example.org/a.jpg") == ReasonCode.BAD_REFERENCE


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/a.jpg":
            self._reply(200, PHOTO)
        elif self.path == "/big.jpg":
            self._reply(200, b"y" * 5000)
        elif self.path == "/moved.jpg":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow.jpg":
            threading.Event().wait(3)
            self._reply(200, PHOTO)
        else:
            self._reply(404, b"no")

    def _reply(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up (the timeout test)
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_photo_on_an_allowed_host_is_fetched(http_host: str) -> None:
    assert (
        fetcher_for(origins=frozenset({f"http://{http_host}"})).fetch(f"http://{http_host}/a.jpg")
        == PHOTO
    )


def test_http_host_not_allowed_is_a_bad_reference(http_host: str) -> None:
    fetcher = fetcher_for(origins=frozenset({"http://photos.example.org:80"}))
    assert reason_of(fetcher, f"http://{http_host}/a.jpg") == ReasonCode.BAD_REFERENCE


def test_http_404_is_unreachable(http_host: str) -> None:
    fetcher = fetcher_for(origins=frozenset({f"http://{http_host}"}))
    assert reason_of(fetcher, f"http://{http_host}/none.jpg") == ReasonCode.REFERENCE_UNREACHABLE


def test_http_redirect_is_not_followed(http_host: str) -> None:
    fetcher = fetcher_for(origins=frozenset({f"http://{http_host}"}))
    assert reason_of(fetcher, f"http://{http_host}/moved.jpg") == ReasonCode.REFERENCE_UNREACHABLE


def test_http_body_over_the_limit_is_too_large(http_host: str) -> None:
    fetcher = fetcher_for(origins=frozenset({f"http://{http_host}"}), max_bytes=1000)
    assert reason_of(fetcher, f"http://{http_host}/big.jpg") == ReasonCode.IMAGE_TOO_LARGE


def test_http_timeout_is_unreachable(http_host: str) -> None:
    fetcher = fetcher_for(origins=frozenset({f"http://{http_host}"}), timeout_s=0.3)
    assert reason_of(fetcher, f"http://{http_host}/slow.jpg") == ReasonCode.REFERENCE_UNREACHABLE
