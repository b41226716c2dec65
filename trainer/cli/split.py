"""``python -m trainer.cli.split``: make a seeded split of a folder of landmark folders.

Writes ``<out>/split.json`` (:func:`trainer.splits.manifest.write_manifest`) and the folders of
symbolic links ``<out>/<part>/<landmark>/<photo>`` (:func:`trainer.splits.manifest.materialise`)
of the standard protocol (:func:`trainer.splits.seeded.standard_split`), e.g.::

    python -m trainer.cli.split --data ../shared/data/landmarks --out .cache/splits/s0 \\
        --seed 0 --hold-out-landmarks 0.25 --query 0.2 --val 0.1 --references 3

writes ``.cache/splits/s0/split.json`` and the folders ``train``, ``val``, ``reference``,
``query`` (landmarks kept for training) and ``heldout_reference``, ``heldout_query`` (landmarks
never trained on), e.g. ``landmark-evaluate --references .cache/splits/s0/reference
--queries .cache/splits/s0/query``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.data.photos import Photo, read_google_landmarks_csv, read_landmark_folders, summarize
from trainer.splits.manifest import MANIFEST_FILE, materialise, write_manifest
from trainer.splits.seeded import standard_split


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
        prog="python -m trainer.cli.split",
        description="Make a seeded split of a folder of landmark folders: write split.json "
        "and folders of symbolic links <out>/<part>/<landmark>/<photo>. Sizes are counts "
        "(3) or fractions (0.2) of each landmark's photos.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(flag: str, env: str, default: str | None, help_text: str, **kwargs: Any) -> None:
        parser.add_argument(
            flag, default=_env(env, default), help=f"{help_text} [env: {env}]", **kwargs
        )

    repo_root = Path(__file__).resolve().parents[2]
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
    from trainer.data.photos import cap_per_landmark

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
