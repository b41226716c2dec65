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

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from configuration import load_settings, setting
from trainer.cli.settings import SplitSettings, manifest_parameters, split_photos
from trainer.data.photos import summarize
from trainer.splits.manifest import MANIFEST_FILE, materialise, write_manifest

DESCRIPTION = (
    "Make a seeded split of a folder of landmark folders: write split.json and folders of "
    "symbolic links <out>/<part>/<landmark>/<photo>. Sizes are counts (3) or fractions (0.2) of "
    "each landmark's photos."
)


class SplitCommandSettings(SplitSettings):
    """The shared split flags (:class:`~trainer.cli.settings.SplitSettings`), its seed and output."""

    group_title: ClassVar[str] = "output"

    out: Path = setting(
        env="LANDMARK_SPLIT_DIR", help="output folder (split.json and part folders)"
    )
    seed: int = setting(0, env="LANDMARK_SPLIT_SEED", help="seed of the split")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trainer.cli.split``."""
    settings = load_settings(
        SplitCommandSettings, argv, prog="python -m trainer.cli.split", description=DESCRIPTION
    )
    try:
        split = split_photos(settings, settings.seed)
        write_manifest(
            settings.out / MANIFEST_FILE,
            split,
            seed=settings.seed,
            parameters=manifest_parameters(settings) | {"seed": settings.seed},
            data_root=settings.data,
        )
        folders = materialise(split, settings.out)
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
