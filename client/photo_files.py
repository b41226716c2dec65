"""The photos ``landmark-publish`` sends: folders expanded to photo files, each with its image id."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PHOTO_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"}
)


@dataclass(frozen=True)
class PhotoFile:
    """A photo to publish: where it is and the id it gets."""

    path: Path
    image_id: str


def find_photos(inputs: Sequence[Path], id_scheme: str) -> list[PhotoFile]:
    """Expand folders (recursively, photo suffixes only) and files into photos with ids.

    Args:
        inputs: Files and folders; files are taken whatever their suffix.
        id_scheme: ``hash`` (sha256 of the bytes, 32 hex: stable across copies) or ``path``
            (the path relative to the given folder, or the file name).

    Raises:
        FileNotFoundError: an input does not exist.
    """
    photos: list[PhotoFile] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
            )
            photos.extend(PhotoFile(p, _image_id(p, p.relative_to(item), id_scheme)) for p in files)
        elif item.is_file():
            photos.append(PhotoFile(item, _image_id(item, Path(item.name), id_scheme)))
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return photos


def _image_id(path: Path, relative: Path, id_scheme: str) -> str:
    if id_scheme == "hash":
        return hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    return relative.as_posix()
