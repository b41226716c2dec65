"""Landmark photo data sets: folder-of-landmark-folders and Google-Landmarks CSV readers.

Both readers produce a list of :class:`Photo` (path, landmark id, landmark name), sorted by
landmark id and then path, so that everything downstream (caps, splits) sees the same order
whatever order the file system or the CSV listed them in.

Decoding is not done here: a file that is listed but cannot be decoded is reported later by
:func:`trainer.data.loading.load_photos` as an ``InputError`` with a reason code.
"""

from __future__ import annotations

import csv
import hashlib
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: File name extensions taken as photos (compared case-insensitively). Files with other
#: extensions in a landmark folder (notes, thumbnails databases, ...) are not photos.
PHOTO_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"}
)

# Google-Landmarks image ids are hex strings; anything with a path separator or a dot must not
# be turned into a path (a crafted CSV could otherwise point outside the images root).
_GOOGLE_ID = re.compile(r"^[0-9A-Za-z_-]{3,}$")


@dataclass(frozen=True)
class Photo:
    """One photo of a landmark on disk."""

    path: Path
    landmark_id: str
    landmark_name: str


@dataclass(frozen=True)
class MissingPhoto:
    """A CSV row whose photo is not on disk (or whose row is unusable)."""

    row_number: int
    image_id: str
    expected_path: Path | None
    reason: str


@dataclass(frozen=True)
class CsvListing:
    """The photos a Google-Landmarks CSV lists that exist on disk, and the rows that do not."""

    photos: list[Photo]
    missing: list[MissingPhoto] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetSummary:
    """How many landmarks and photos, and how unequal the landmarks are."""

    landmarks: int
    photos: int
    min_per_landmark: int
    median_per_landmark: float
    max_per_landmark: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "landmarks": self.landmarks,
            "photos": self.photos,
            "min_per_landmark": self.min_per_landmark,
            "median_per_landmark": self.median_per_landmark,
            "max_per_landmark": self.max_per_landmark,
        }


def sort_photos(photos: Iterable[Photo]) -> list[Photo]:
    """Photos sorted by landmark id, then path: the canonical order of every listing."""
    return sorted(photos, key=lambda photo: (photo.landmark_id, str(photo.path)))


def landmark_name_from_folder(folder_name: str) -> str:
    """A readable name from a landmark folder name: ``brandenburg_gate`` → ``brandenburg gate``."""
    return " ".join(folder_name.replace("_", " ").split())


def is_photo_file(path: Path) -> bool:
    """True for a visible regular file whose extension is a photo extension."""
    return (
        not path.name.startswith(".") and path.suffix.lower() in PHOTO_EXTENSIONS and path.is_file()
    )


def read_landmark_folders(root: Path | str) -> list[Photo]:
    """List the photos of a folder of landmark folders, ``<root>/<landmark>/<photo>``.

    The folder name is the landmark id. Hidden files and folders (names starting with ``.``),
    files directly under ``root`` and files without a photo extension are skipped; a landmark
    folder with no photos contributes nothing. Symbolic links are followed, so a split
    materialised as links (see ``trainer.splits.manifest``) reads like the original folders.

    Args:
        root: the folder that holds one sub-folder per landmark.

    Returns:
        The photos, sorted by landmark id then path.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is not a folder.
        ValueError: no landmark folder under ``root`` holds a photo.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"landmark photo folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder of landmark folders")
    photos: list[Photo] = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        name = landmark_name_from_folder(folder.name)
        photos.extend(
            Photo(path, folder.name, name)
            for path in sorted(folder.iterdir())
            if is_photo_file(path)
        )
    if not photos:
        raise ValueError(
            f"no photos under {root}: expected <root>/<landmark>/<photo> with extensions "
            f"{', '.join(sorted(PHOTO_EXTENSIONS))}"
        )
    return sort_photos(photos)


def google_landmarks_photo_path(images_root: Path, image_id: str) -> Path:
    """Where the Google-Landmarks download scripts put a photo: ``<root>/a/b/c/abc….jpg``."""
    if not _GOOGLE_ID.match(image_id):
        raise ValueError(f"not a Google-Landmarks image id: {image_id!r}")
    return images_root / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def read_landmark_names(names_csv: Path | str) -> dict[str, str]:
    """Read a label-name CSV: ``landmark_id`` plus a ``name`` or ``category`` column.

    Google-Landmarks v2 ships ``train_label_to_category.csv`` whose ``category`` is a Wikimedia
    Commons URL ``…/Category:Haleakala_National_Park``; the part after ``Category:`` becomes the
    name, with underscores as spaces.

    Raises:
        ValueError: the CSV lacks the columns.
    """
    with open(names_csv, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        name_column = "name" if "name" in columns else "category" if "category" in columns else None
        if "landmark_id" not in columns or name_column is None:
            raise ValueError(
                f"{names_csv}: expected columns landmark_id and name (or category), "
                f"found {sorted(columns)}"
            )
        names: dict[str, str] = {}
        for row in reader:
            raw = (row[name_column] or "").strip()
            if "Category:" in raw:
                raw = raw.rsplit("Category:", 1)[1].replace("_", " ")
            names[row["landmark_id"].strip()] = raw
        return names


def read_google_landmarks_csv(
    csv_path: Path | str,
    images_root: Path | str,
    names_csv: Path | str | None = None,
) -> CsvListing:
    """Read a Google-Landmarks ``id,url,landmark_id`` CSV and find its photos on disk.

    Rows whose photo is not on disk, whose landmark id is empty or ``None``, or whose image id
    is not a plain id are not fatal: they are returned in ``CsvListing.missing`` (real downloads
    always miss some photos whose URLs have died).

    Args:
        csv_path: the CSV (``train.csv`` of Google-Landmarks v1 or v2).
        images_root: the folder the photos were downloaded into.
        names_csv: optional label-name CSV (see :func:`read_landmark_names`); without it, or
            for a landmark it does not name, the landmark id is the name.

    Returns:
        The photos found (sorted by landmark id then path) and the rows that are missing.

    Raises:
        FileNotFoundError: the CSV or the images root does not exist.
        ValueError: the CSV lacks the ``id`` or ``landmark_id`` column.
    """
    csv_path, images_root = Path(csv_path), Path(images_root)
    if not images_root.is_dir():
        raise FileNotFoundError(f"Google-Landmarks images folder {images_root} does not exist")
    names = read_landmark_names(names_csv) if names_csv is not None else {}
    photos: list[Photo] = []
    missing: list[MissingPhoto] = []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if not {"id", "landmark_id"} <= columns:
            raise ValueError(
                f"{csv_path}: expected a header with id,url,landmark_id, found {sorted(columns)}"
            )
        # Row 1 is the header, so data rows start at 2 (as a spreadsheet numbers them).
        for row_number, row in enumerate(reader, start=2):
            image_id = (row["id"] or "").strip()
            landmark_id = (row["landmark_id"] or "").strip()
            if not landmark_id or landmark_id == "None":
                missing.append(MissingPhoto(row_number, image_id, None, "no landmark id"))
                continue
            try:
                path = google_landmarks_photo_path(images_root, image_id)
            except ValueError as error:
                missing.append(MissingPhoto(row_number, image_id, None, str(error)))
                continue
            if not path.is_file():
                missing.append(MissingPhoto(row_number, image_id, path, "photo not on disk"))
                continue
            photos.append(Photo(path, landmark_id, names.get(landmark_id) or landmark_id))
    return CsvListing(sort_photos(photos), missing)


def group_by_landmark(photos: Iterable[Photo]) -> dict[str, list[Photo]]:
    """Photos per landmark id, landmarks in sorted order and photos sorted within each."""
    groups: dict[str, list[Photo]] = defaultdict(list)
    for photo in photos:
        groups[photo.landmark_id].append(photo)
    return {landmark: sort_photos(groups[landmark]) for landmark in sorted(groups)}


def shuffle_key(seed: int, photo: Photo) -> tuple[str, str]:
    """A seeded, order-free sort key for a photo.

    It hashes the seed, the landmark id and the file *name* (not the full path), so a split
    does not change when the data folder moves or when the files are listed in another order.
    The full path breaks the (practically impossible) tie of equal hashes.
    """
    digest = hashlib.sha256(f"{seed}\x00{photo.landmark_id}\x00{photo.path.name}".encode())
    return digest.hexdigest(), str(photo.path)


def seeded_order(photos: Iterable[Photo], seed: int) -> list[Photo]:
    """The photos in a pseudo-random order that depends only on the seed and the photos."""
    return sorted(photos, key=lambda photo: shuffle_key(seed, photo))


def cap_per_landmark(photos: Sequence[Photo], n: int, seed: int) -> list[Photo]:
    """Keep at most ``n`` photos a landmark (the paper's cap), chosen by a seeded hash order.

    Returns:
        The kept photos, sorted by landmark id then path.

    Raises:
        ValueError: ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"the cap must be at least one photo a landmark, got {n}")
    kept: list[Photo] = []
    for group in group_by_landmark(photos).values():
        kept.extend(seeded_order(group, seed)[:n])
    return sort_photos(kept)


def summarize(photos: Sequence[Photo]) -> DatasetSummary:
    """Landmarks, photos, and the smallest, median and largest number of photos a landmark."""
    counts = [len(group) for group in group_by_landmark(photos).values()]
    if not counts:
        return DatasetSummary(0, 0, 0, 0.0, 0)
    return DatasetSummary(
        landmarks=len(counts),
        photos=sum(counts),
        min_per_landmark=min(counts),
        median_per_landmark=float(statistics.median(counts)),
        max_per_landmark=max(counts),
    )


def landmark_names(photos: Iterable[Photo]) -> Mapping[str, str]:
    """Landmark id → landmark name for the photos given."""
    return {photo.landmark_id: photo.landmark_name for photo in photos}
