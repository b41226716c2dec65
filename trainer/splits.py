"""Deterministic, seeded splits of landmark photos, split manifests, and split folders.

Every split here depends only on the seed and on the photos themselves (landmark id and file
name, see :func:`trainer.data.shuffle_key`): not on the order in which files were listed, nor on
where the data folder lives. A split is written once as a JSON manifest (:func:`write_manifest`)
so that ``landmark-train`` and ``landmark-evaluate`` share exactly one split, and can be
materialised as folders of symbolic links ``<out>/<part>/<landmark>/<photo>``
(:func:`materialise`) that every command taking a folder of landmark folders reads.

Command line (``python -m trainer.splits --help``), for the standard protocol on the bundled
photos::

    python -m trainer.splits --data ../shared/data/landmarks --out .cache/splits/s0 \\
        --seed 0 --hold-out-landmarks 0.25 --query 0.2 --val 0.1 --references 3

writes ``.cache/splits/s0/split.json`` and the folders ``train``, ``val``, ``reference``,
``query`` (landmarks kept for training) and ``heldout_reference``, ``heldout_query`` (landmarks
never trained on), e.g. ``landmark-evaluate --references .cache/splits/s0/reference
--queries .cache/splits/s0/query``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.data import (
    Photo,
    group_by_landmark,
    read_google_landmarks_csv,
    read_landmark_folders,
    seeded_order,
    sort_photos,
    summarize,
)

MANIFEST_FORMAT_VERSION = 1
MANIFEST_FILE = "split.json"


@dataclass(frozen=True)
class Split:
    """Photos per named part, and the landmarks left out because they were too small."""

    parts: dict[str, list[Photo]]
    too_small: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {name: summarize(photos).to_dict() for name, photos in self.parts.items()}


def _part_count(size: float | int, n: int, name: str) -> int:
    """How many of a landmark's ``n`` photos a part asks for (a fraction gets at least one)."""
    if isinstance(size, bool) or not isinstance(size, int | float):
        raise TypeError(f"size of part {name!r} must be an int count or a float fraction")
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"part {name!r} must ask for at least one photo, got {size}")
        return size
    if not 0.0 < size < 1.0:
        raise ValueError(f"fraction for part {name!r} must be in (0, 1), got {size}")
    return max(1, math.floor(size * n + 0.5))


def _landmark_counts(
    n: int, sizes: Mapping[str, float | int], max_references: int | None, reference_part: str
) -> dict[str, int] | None:
    """Photos for each sized part of one landmark, or None if the landmark is too small."""
    if n < len(sizes) + 1:
        return None
    counts = {name: _part_count(size, n, name) for name, size in sizes.items()}
    if max_references is not None and reference_part in counts:
        counts[reference_part] = min(counts[reference_part], max_references)
    # Shrink the largest part (the later one on ties) until the rest part keeps one photo.
    names = list(counts)
    while sum(counts.values()) > n - 1:
        largest = max(reversed(names), key=lambda name: counts[name])
        counts[largest] -= 1
    return counts


def split_per_landmark(
    photos: Sequence[Photo],
    sizes: Mapping[str, float | int],
    *,
    rest: str,
    seed: int,
    max_references: int | None = None,
    reference_part: str = "reference",
) -> Split:
    """Split each landmark's photos into named parts, reproducibly from a seed.

    Each landmark's photos are put in a seeded hash order; the parts named in ``sizes`` take
    consecutive slices in the order ``sizes`` lists them, and the ``rest`` part takes what is
    left. A size is a count (``int``, e.g. ``"reference": 3``) or a fraction of the landmark's
    photos (``float`` in (0, 1), rounded half up, at least one photo).

    Small landmarks: every part keeps at least one photo of every landmark. When the sizes ask
    for more than a landmark has, the largest sized part (the later one on ties) gives up one
    photo at a time until the ``rest`` part keeps one. A landmark with fewer photos than there
    are parts (sized parts + rest) cannot give one to each and is left out of every part; its
    id is listed in ``Split.too_small``.

    Args:
        photos: the photos to split.
        sizes: part name → count or fraction, e.g. ``{"query": 0.2, "val": 0.1, "reference": 3}``.
        rest: the part that takes the remaining photos, e.g. ``"train"``.
        seed: the seed of the hash order.
        max_references: at most this many photos a landmark in ``reference_part`` (the excess
            goes to ``rest``).
        reference_part: which part ``max_references`` caps.

    Returns:
        The split, parts in the order ``sizes`` then ``rest``, photos sorted within each part.

    Raises:
        ValueError: ``rest`` is also in ``sizes``, a size is out of range, or
            ``max_references`` is below 1.
    """
    if rest in sizes:
        raise ValueError(f"part {rest!r} cannot be both sized and the rest")
    if max_references is not None and max_references < 1:
        raise ValueError(f"max_references must be at least 1, got {max_references}")
    parts: dict[str, list[Photo]] = {name: [] for name in [*sizes, rest]}
    too_small: list[str] = []
    for landmark, group in group_by_landmark(photos).items():
        counts = _landmark_counts(len(group), sizes, max_references, reference_part)
        if counts is None:
            too_small.append(landmark)
            continue
        ordered = seeded_order(group, seed)
        start = 0
        for name, count in counts.items():
            parts[name].extend(ordered[start : start + count])
            start += count
        parts[rest].extend(ordered[start:])
    return Split({name: sort_photos(part) for name, part in parts.items()}, too_small)


def hold_out_landmarks(
    photos: Sequence[Photo], amount: float | int, seed: int, *, min_photos: int = 2
) -> tuple[list[Photo], list[Photo]]:
    """Hold whole landmarks out of training, chosen by a seeded hash of their ids.

    Only landmarks with at least ``min_photos`` photos are eligible (a held-out landmark needs
    one reference and one query photo at least).

    Args:
        photos: all photos.
        amount: how many landmarks to hold out: a count (``int``) or a fraction (``float`` in
            (0, 1)) of the eligible landmarks, rounded half up, at least one.
        seed: the seed of the hash order.
        min_photos: the smallest landmark that may be held out.

    Returns:
        ``(kept, held_out)``: photos of the landmarks kept for training and of those held out.

    Raises:
        ValueError: the amount is out of range or more than the eligible landmarks.
    """
    groups = group_by_landmark(photos)
    eligible = sorted(
        (landmark for landmark, group in groups.items() if len(group) >= min_photos),
        key=lambda landmark: hashlib.sha256(f"{seed}\x00{landmark}".encode()).hexdigest(),
    )
    count = _part_count(amount, len(eligible), "held-out landmarks")
    if count > len(eligible):
        raise ValueError(
            f"cannot hold out {count} landmarks: only {len(eligible)} have at least "
            f"{min_photos} photos"
        )
    held = set(eligible[:count])
    kept = [photo for landmark, group in groups.items() if landmark not in held for photo in group]
    held_out = [photo for landmark, group in groups.items() if landmark in held for photo in group]
    return kept, held_out


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


def standard_split(
    photos: Sequence[Photo],
    *,
    seed: int,
    hold_out: float | int | None,
    query: float | int,
    val: float | int | None,
    references: float | int,
    heldout_references: float | int,
) -> Split:
    """The evaluation protocol of the issue: trained landmarks split into train / val /
    reference / query, held-out landmarks into heldout_reference / heldout_query."""
    kept, held_out = hold_out_landmarks(photos, hold_out, seed) if hold_out else (list(photos), [])
    sizes: dict[str, float | int] = {"query": query}
    if val:
        sizes["val"] = val
    sizes["reference"] = references
    known = split_per_landmark(kept, sizes, rest="train", seed=seed)
    parts: dict[str, list[Photo]] = {
        name: known.parts[name]
        for name in ("train", "val", "reference", "query")
        if name in known.parts
    }
    too_small = list(known.too_small)
    if held_out:
        unknown = split_per_landmark(
            held_out, {"heldout_reference": heldout_references}, rest="heldout_query", seed=seed
        )
        parts.update(unknown.parts)
        too_small += unknown.too_small
    return Split(parts, too_small)


def _number(text: str) -> float | int:
    """A count ("3") or a fraction ("0.2") from the command line."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name, default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.splits",
        description="Make a seeded split of a folder of landmark folders: write split.json "
        "and folders of symbolic links <out>/<part>/<landmark>/<photo>. Sizes are counts "
        "(3) or fractions (0.2) of each landmark's photos.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(flag: str, env: str, default: str | None, help_text: str, **kwargs: Any) -> None:
        parser.add_argument(
            flag, default=_env(env, default), help=f"{help_text} [env: {env}]", **kwargs
        )

    repo_root = Path(__file__).resolve().parent.parent
    add(
        "--data",
        "LANDMARK_DATA_DIR",
        str(repo_root.parent / "shared" / "data" / "landmarks"),
        "folder of landmark folders, or the images root of --csv",
    )
    add(
        "--csv",
        "LANDMARK_SPLIT_CSV",
        None,
        "Google-Landmarks id,url,landmark_id CSV whose photos are under --data",
    )
    add(
        "--names-csv",
        "LANDMARK_SPLIT_NAMES_CSV",
        None,
        "optional landmark_id,name (or category) CSV for --csv",
    )
    add("--out", "LANDMARK_SPLIT_DIR", None, "output folder (split.json and part folders)")
    add("--seed", "LANDMARK_SPLIT_SEED", "0", "seed of the split", type=int)
    add(
        "--hold-out-landmarks",
        "LANDMARK_SPLIT_HOLD_OUT",
        "0.25",
        "landmarks held out of training (count or fraction; 0 for none)",
        type=_number,
    )
    add("--query", "LANDMARK_SPLIT_QUERY", "0.2", "query photos a trained landmark", type=_number)
    add(
        "--val",
        "LANDMARK_SPLIT_VAL",
        "0.1",
        "validation photos a trained landmark (0: none)",
        type=_number,
    )
    add(
        "--references",
        "LANDMARK_SPLIT_REFERENCES",
        "3",
        "reference photos a trained landmark (count)",
        type=int,
    )
    add(
        "--heldout-references",
        "LANDMARK_SPLIT_HELDOUT_REFERENCES",
        "3",
        "reference photos a held-out landmark (the rest are its queries)",
        type=_number,
    )
    add(
        "--cap",
        "LANDMARK_SPLIT_CAP",
        None,
        "at most this many photos a landmark before splitting (the paper's cap)",
        type=int,
    )
    return parser


def _read_photos(args: argparse.Namespace) -> list[Photo]:
    if args.csv is None:
        return read_landmark_folders(args.data)
    listing = read_google_landmarks_csv(args.csv, args.data, args.names_csv)
    if listing.missing:
        print(f"{len(listing.missing)} CSV rows have no photo on disk; left out", file=sys.stderr)
    return listing.photos


def main(argv: Sequence[str] | None = None) -> int:
    from trainer.data import cap_per_landmark

    args = build_parser().parse_args(argv)
    if args.out is None:
        print("error: --out (or LANDMARK_SPLIT_DIR) is required", file=sys.stderr)
        return 2
    try:
        photos = _read_photos(args)
        if args.cap is not None:
            photos = cap_per_landmark(photos, args.cap, args.seed)
        split = standard_split(
            photos,
            seed=args.seed,
            hold_out=args.hold_out_landmarks or None,
            query=args.query,
            val=args.val or None,
            references=args.references,
            heldout_references=args.heldout_references,
        )
        out = Path(args.out)
        parameters = {key: value for key, value in vars(args).items() if key not in {"out", "data"}}
        write_manifest(
            out / MANIFEST_FILE, split, seed=args.seed, parameters=parameters, data_root=args.data
        )
        folders = materialise(split, out)
    except (OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, folder in folders.items():
        summary = summarize(split.parts[name])
        print(f"{name:18s} {summary.landmarks:4d} landmarks {summary.photos:6d} photos  {folder}")
    if split.too_small:
        print(f"left out (too few photos): {', '.join(split.too_small)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
