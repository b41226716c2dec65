"""Reading a regular file under a root without blocking on, or being tricked by, what is there.

``open()`` on a FIFO waits for a writer forever, and a device can block or have side effects
on open; a symlink or a FIFO can also be swapped in after a check by name. So the file is
opened step by step from the root without following symlinks (the caller resolved the path,
so a symlink found now was put there since), with ``O_NONBLOCK`` so that nothing waits, and
its type is checked on the open descriptor (``fstat``) before a byte is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePath

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symlink",
}
_REFUSED_ERRNOS = {
    errno.ELOOP: "a symlink",
    errno.ENXIO: "a socket or a device without a driver",
    errno.ENODEV: "a device",
}


class NotARegularFileError(OSError):
    """The path names a directory, FIFO, socket, device or (newly) a symlink."""


class FileTooLargeError(Exception):
    """The file has more bytes than allowed.

    Attributes:
        size: Its size, or ``None`` when it grew past the limit while being read.
    """

    def __init__(self, size: int | None) -> None:
        super().__init__(f"{size if size is not None else 'more'} bytes")
        self.size = size


def read_regular_file(root: Path, relative: PurePath, max_bytes: int) -> bytes:
    """Read ``root / relative`` if it is a regular file reached without following a symlink.

    Args:
        root: A resolved directory.
        relative: The resolved path of the file, relative to ``root``.
        max_bytes: Most bytes to read.

    Returns:
        The contents.

    Raises:
        FileTooLargeError: When the file has more than ``max_bytes``.
        NotARegularFileError: When it is not a regular file, or a symlink is met on the way.
        OSError: When it cannot be opened or read (missing, no permission, ...).
    """
    if not relative.parts:
        raise NotARegularFileError("a directory")
    parent = _open_directory(root, relative.parts[:-1])
    try:
        name = relative.parts[-1]
        # Look before opening, so that a device is never opened; the fstat below closes the race.
        _require_regular(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        try:
            descriptor = os.open(name, _FILE_FLAGS, dir_fd=parent)
        except OSError as error:
            raise _refusal(error) from None
    finally:
        os.close(parent)
    with open(descriptor, "rb") as photo:
        status = os.fstat(descriptor)
        _require_regular(status.st_mode)
        if status.st_size > max_bytes:
            raise FileTooLargeError(status.st_size)
        os.set_blocking(descriptor, True)
        # Asking for the file's size (plus one byte, to see it grow) rather than the limit:
        # read(n) allocates n bytes first, and 32 MiB for a 1.4 MB photo cost 16x the read.
        data = photo.read(status.st_size + 1)
        if len(data) > status.st_size:  # it grew since fstat: read on, up to the limit
            data += photo.read(max_bytes + 1 - len(data))
    if len(data) > max_bytes:
        raise FileTooLargeError(None)
    return data


def _open_directory(root: Path, parts: tuple[str, ...]) -> int:
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                inner = os.open(part, _DIRECTORY_FLAGS, dir_fd=descriptor)
            except NotADirectoryError:  # a file, or (O_NOFOLLOW) a symlink: which one?
                _require_no_symlink(part, descriptor)
                raise
            os.close(descriptor)
            descriptor = inner
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _require_no_symlink(name: str, directory: int) -> None:
    if stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode):
        raise NotARegularFileError("a symlink")


def _require_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotARegularFileError(_KINDS.get(stat.S_IFMT(mode), "not a regular file"))


def _refusal(error: OSError) -> OSError:
    """A symlink met with ``O_NOFOLLOW`` or a node that cannot be opened is a refusal."""
    kind = _REFUSED_ERRNOS.get(error.errno or 0)
    return error if kind is None else NotARegularFileError(kind)
