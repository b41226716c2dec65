"""Deterministic, seeded splits of landmark photos.

Every split here depends only on the seed and on the photos themselves (landmark id and file
name, see :func:`trainer.data.photos.shuffle_key`): not on the order in which files were listed,
nor on where the data folder lives. Splits are stored and shared as manifests and folders of links
(:mod:`trainer.splits.manifest`).

The command line ``python -m trainer.cli.split`` (:mod:`trainer.cli.split`) makes the standard
split (:func:`standard_split`) of a folder of landmark folders.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainer.data.photos import Photo, group_by_landmark, seeded_order, sort_photos, summarize


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
