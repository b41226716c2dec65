"""A split on disk: its JSON manifest, and its folders of symbolic links.

A split is written once as a JSON manifest (:func:`write_manifest`) so that ``landmark-train``
and ``landmark-evaluate`` share exactly one split, and can be materialised as folders of
symbolic links ``<out>/<part>/<landmark>/<photo>`` (:func:`materialise`) that every command
taking a folder of landmark folders reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.data.photos import Photo
from trainer.splits.seeded import Split

MANIFEST_FORMAT_VERSION = 1
MANIFEST_FILE = "split.json"


def _photo_record(photo: Photo, root: Path | None) -> dict[str, str]:
    path = photo.path
    if root is not None and path.is_relative_to(root):
        path = path.relative_to(root)
    return {
        "path": str(path),
        "landmark_id": photo.landmark_id,
        "landmark_name": photo.landmark_name,
    }


def write_manifest(
    path: Path | str,
    split: Split,
    *,
    seed: int,
    parameters: Mapping[str, Any],
    data_root: Path | str | None = None,
) -> None:
    """Write a split to JSON: per part, the list of photos (path, landmark id and name).

    Paths under ``data_root`` are stored relative to it (with the root recorded), so a manifest
    survives moving the data folder: pass another root to :func:`read_manifest`.
    """
    root = Path(data_root).resolve() if data_root is not None else None
    document = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "seed": seed,
        "parameters": dict(parameters),
        "data_root": str(root) if root is not None else None,
        "too_small": split.too_small,
        "summary": split.summary(),
        "parts": {
            name: [
                _photo_record(Photo(p.path.resolve(), p.landmark_id, p.landmark_name), root)
                for p in photos
            ]
            for name, photos in split.parts.items()
        },
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def read_manifest(path: Path | str, data_root: Path | str | None = None) -> Split:
    """Read a split manifest; relative photo paths resolve against ``data_root`` if given,
    else against the root recorded in the manifest.

    Raises:
        ValueError: not a split manifest of a known format version.
    """
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format_version") != MANIFEST_FORMAT_VERSION:
        raise ValueError(f"{path} is not a split manifest of format {MANIFEST_FORMAT_VERSION}")
    root_text = data_root if data_root is not None else document.get("data_root")
    root = Path(root_text) if root_text is not None else None
    parts: dict[str, list[Photo]] = {}
    for name, records in document["parts"].items():
        photos = []
        for record in records:
            photo_path = Path(record["path"])
            if not photo_path.is_absolute() and root is not None:
                photo_path = root / photo_path
            photos.append(Photo(photo_path, record["landmark_id"], record["landmark_name"]))
        parts[name] = photos
    return Split(parts, list(document.get("too_small", [])))


def materialise(split: Split, out_dir: Path | str) -> dict[str, Path]:
    """Make ``<out>/<part>/<landmark>/<photo>`` symbolic links (absolute targets) for a split.

    Running it again over the same split is a no-op; a link that exists but points elsewhere
    is an error, never silently replaced.

    Returns:
        Part name → its folder of landmark folders.

    Raises:
        FileExistsError: a path to create exists and is not a link to the same photo.
    """
    out_dir = Path(out_dir)
    folders: dict[str, Path] = {}
    for name, photos in split.parts.items():
        part_dir = out_dir / name
        part_dir.mkdir(parents=True, exist_ok=True)
        folders[name] = part_dir
        for photo in photos:
            link = part_dir / photo.landmark_id / photo.path.name
            target = photo.path.resolve()
            if link.is_symlink() or link.exists():
                if link.is_symlink() and Path(os.readlink(link)) == target:
                    continue
                raise FileExistsError(f"{link} exists and is not a link to {target}")
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(target)
    return folders
