"""ReferenceFetcher against hostile references: non-regular files, slow or broken HTTP hosts.

Every case must end, promptly, in an InputError with the right reason and a message that
describes the failure without quoting what the remote sent. Fetches run in a thread joined
with a timeout, so that a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import threading
import time
from pathlib import Path, PurePath

import pytest

from schemas.errors import InputError, ReasonCode
from worker.adapters.photo_fetcher import FetcherSettings, ReferenceFetcher
from worker.adapters.photo_fetcher.regular_files import NotARegularFileError, read_regular_file

PHOTO = b"\xff\xd8\xff" + b"x" * 100
#: How long a fetch may run in these tests before it counts as hung.
HANG_S = 6.0
#: The trickling host sends one byte per TRICKLE_S, TRICKLE_BYTES in all (10 s).
TRICKLE_S = 0.25
TRICKLE_BYTES = 40
BANNER = b"SSH-2.0-OpenSSH_9.6 secret-banner\r\n"
GZIP_BODY = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)


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
