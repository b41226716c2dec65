"""Photos for the demo when no folder of landmark photos is at hand: fetch a public sample.

Two kinds of archive (``.tar``, ``.tar.gz``, ``.tgz`` or ``.zip``) are understood:

- a folder of landmark folders (``<landmark>/<photo>``, at any depth inside the archive);
- Google-Landmarks images (``<a>/<b>/<c>/<id>.jpg``, as in GLDv2's ``images_NNN.tar``) together
  with a labels CSV (``id,url,landmark_id`` like GLDv2's ``train.csv``, or ``id,landmark_id``):
  the CSV is streamed and only the rows of photos in the archive are kept; landmarks with at least
  ``min_photos`` photos become landmark folders (of hard links) under the destination.

Archives are unpacked with checks: no absolute paths, no ``..``, no links, regular files only.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

DEFAULT_SAMPLE_URL = "https://s3.amazonaws.com/google-landmark/train/images_000.tar"
DEFAULT_SAMPLE_LABELS_URL = "https://s3.amazonaws.com/google-landmark/metadata/train.csv"
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

HOW_TO_PROVIDE_PHOTOS = """\
The demo needs photos of landmarks, one folder a landmark:

    photos/
      eiffel_tower/  1.jpg 2.jpg ...   (at least 4 photos a landmark; 20 or more is better)
      big_ben/       ...

then:  LANDMARK_DATA_DIR=/path/to/photos make demo      (or: landmark-demo --data /path/to/photos)

Or point LANDMARK_DEMO_SAMPLE_URL at a reachable .tar/.zip of such folders (set
LANDMARK_DEMO_SAMPLE_LABELS_URL='' for that), or at Google-Landmarks images with their labels CSV
in LANDMARK_DEMO_SAMPLE_LABELS_URL."""


class SampleUnavailable(Exception):
    """The sample could not be downloaded or did not hold usable landmark photos."""


def looks_like_landmark_folders(root: Path, min_landmarks: int = 2) -> bool:
    """Whether ``root`` holds at least ``min_landmarks`` folders with photos in them."""
    if not root.is_dir():
        return False
    found = 0
    for child in root.iterdir():
        if (
            child.is_dir()
            and not child.name.startswith(".")
            and any(p.suffix.lower() in PHOTO_SUFFIXES for p in child.iterdir())
        ):
            found += 1
            if found >= min_landmarks:
                return True
    return False


def download(url: str, dest: Path, timeout_s: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` (via a ``.part`` file); an existing ``dest`` is reused.

    Raises:
        SampleUnavailable: the network or the server refused.
    """
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        raise SampleUnavailable(f"could not download {url}: {error}") from error
    partial.replace(dest)
    return dest


def _safe_name(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def _members(archive: Path) -> Iterator[tuple[PurePosixPath, io.BufferedIOBase]]:
    """Regular files of a tar or zip archive with safe relative names, as readable streams."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                name = _safe_name(info.filename)
                if name is not None and not info.is_dir():
                    with zipped.open(info) as stream:
                        yield name, stream  # type: ignore[misc]
        return
    try:
        with tarfile.open(archive, "r:*") as tarred:
            for member in tarred:
                name = _safe_name(member.name)
                if name is None or not member.isfile():
                    continue
                extracted = tarred.extractfile(member)
                if extracted is not None:
                    yield name, extracted  # type: ignore[misc]
    except tarfile.TarError as error:
        raise SampleUnavailable(
            f"{archive.name} is neither a tar nor a zip archive: {error}"
        ) from error


def unpack_photos(archive: Path, out_dir: Path) -> list[Path]:
    """Unpack the photos (by suffix) of ``archive`` under ``out_dir``; returns their paths."""
    written = []
    for name, stream in _members(archive):
        if name.suffix.lower() not in PHOTO_SUFFIXES or name.name.startswith("."):
            continue
        target = out_dir.joinpath(*name.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            shutil.copyfileobj(stream, out)
        written.append(target)
    return written


def _landmark_root(photos: list[Path], out_dir: Path) -> Path | None:
    """The folder whose sub-folders are landmarks: the parent of the photos' parents."""
    roots = {p.parent.parent for p in photos}
    if len(roots) == 1:
        root = roots.pop()
        if looks_like_landmark_folders(root):
            return root
    return None


def _labels_of(labels_csv: Path, wanted: set[str]) -> dict[str, str]:
    """Landmark id of each wanted photo id, streaming the (possibly large) CSV."""
    labels = {}
    with labels_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"id", "landmark_id"} <= set(reader.fieldnames):
            raise SampleUnavailable(f"{labels_csv.name} has no id and landmark_id columns")
        for row in reader:
            if row["id"] in wanted:
                labels[row["id"]] = row["landmark_id"]
    return labels


def fetch_sample(
    url: str,
    dest: Path,
    labels_url: str | None = None,
    min_photos: int = 4,
    timeout_s: float = 30.0,
) -> Path:
    """Download and unpack a sample; returns a folder of landmark folders.

    Args:
        url: the archive's URL.
        dest: working folder (downloads are kept there and reused).
        labels_url: Google-Landmarks labels CSV, for an archive without landmark folders.
        min_photos: landmarks with fewer photos are left out (Google-Landmarks layout).
        timeout_s: network timeout a request.

    Raises:
        SampleUnavailable: download failed, or no landmark photos came out of it.
    """
    archive = download(url, dest / "download" / (PurePosixPath(url).name or "sample"), timeout_s)
    unpacked = dest / "unpacked"
    if unpacked.exists():
        shutil.rmtree(unpacked)
    photos = unpack_photos(archive, unpacked)
    if not photos:
        raise SampleUnavailable(f"{url} holds no photos")
    root = _landmark_root(photos, unpacked)
    if root is not None:
        return root
    if not labels_url:
        raise SampleUnavailable(f"{url} has no landmark folders and no labels CSV was given")
    labels_csv = download(labels_url, dest / "download" / "labels.csv", timeout_s)
    by_id = {p.stem: p for p in photos}
    labels = _labels_of(labels_csv, set(by_id))
    groups: dict[str, list[Path]] = defaultdict(list)
    for photo_id, landmark in labels.items():
        groups[landmark].append(by_id[photo_id])
    landmarks = dest / "landmarks"
    if landmarks.exists():
        shutil.rmtree(landmarks)
    for landmark, members in groups.items():
        if len(members) < min_photos:
            continue
        folder = landmarks / landmark
        folder.mkdir(parents=True, exist_ok=True)
        for photo in members:
            os.link(photo, folder / photo.name)
    if not looks_like_landmark_folders(landmarks):
        raise SampleUnavailable(
            f"fewer than 2 landmarks with {min_photos}+ photos in {url} (labels from {labels_url})"
        )
    return landmarks
