"""Source-held-out folds: which photo plays which role when one collection is held out.

The photos come from a few *sources* (collections: ``sources.csv`` maps each landmark to one).
A fold holds one source S out:

- *trained landmarks* (every landmark of the other sources): per landmark, in the seeded order of
  :func:`trainer.data.photos.seeded_order`, the first R photos are gallery references, the next
  up to Q are queries ("new photos of trained landmarks"), the next few are validation photos
  (early stopping and threshold calibration) and the rest are training photos. A landmark with
  too few photos fills the roles in that order: references first, then queries, then validation
  and training, so a small landmark may have no training photo at all.
- *unseen landmarks* (the landmarks of S): R references, then up to U queries ("landmarks of an
  unseen source"). None of their photos is used for training or calibration.
- one gallery: the references of *all* landmarks, trained and unseen, as in a deployment where
  every landmark's references are distractors for every other's.

A landmark's references are the same in every fold (they depend on the seed and the landmark
only), so every fold searches the same gallery. Everything here is a pure function of the photo
list, the source map and the plan.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer.data.photos import Photo, group_by_landmark, seeded_order, sort_photos

#: Photos that stay in training whenever a landmark gives any to validation: a landmark whose
#: photos validate must be trained on, with at least one positive pair.
MIN_TRAIN_WITH_VALIDATION = 2


@dataclass(frozen=True)
class FoldPlan:
    """How many photos each role takes.

    Attributes:
        references: gallery references a landmark (trained and unseen).
        queries: most query photos a trained landmark.
        unseen_queries: most query photos an unseen landmark.
        val_share: share of a trained landmark's photos for validation (at least one when the
            landmark keeps :data:`MIN_TRAIN_WITH_VALIDATION` training photos besides).
        seed: seed of the photo order within each landmark.
    """

    references: int = 3
    queries: int = 20
    unseen_queries: int = 40
    val_share: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.references < 1:
            raise ValueError(f"references must be at least 1, got {self.references}")
        if self.queries < 0 or self.unseen_queries < 0:
            raise ValueError("query counts must not be negative")
        if not 0.0 <= self.val_share < 1.0:
            raise ValueError(f"val_share must be in [0, 1), got {self.val_share}")


@dataclass(frozen=True)
class Fold:
    """The photos of one held-out source, by role."""

    held_out: str
    gallery: tuple[Photo, ...]
    trained_queries: tuple[Photo, ...]
    unseen_queries: tuple[Photo, ...]
    val: tuple[Photo, ...]
    train: tuple[Photo, ...]
    trained_landmarks: tuple[str, ...]
    unseen_landmarks: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        """Photos and landmarks per role, for reports."""
        return {
            "trained_landmarks": len(self.trained_landmarks),
            "unseen_landmarks": len(self.unseen_landmarks),
            "gallery": len(self.gallery),
            "trained_queries": len(self.trained_queries),
            "unseen_queries": len(self.unseen_queries),
            "val": len(self.val),
            "train": len(self.train),
            "landmarks_trained_on": len({p.landmark_id for p in self.train}),
        }


def read_sources(csv_path: Path | str) -> dict[str, str]:
    """Landmark id → source, from a ``landmark,source[,…]`` CSV.

    Raises:
        ValueError: the CSV lacks the columns, or names a landmark twice with two sources.
    """
    sources: dict[str, str] = {}
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"landmark", "source"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{csv_path}: expected columns landmark,source")
        for row in reader:
            landmark, source = row["landmark"].strip(), row["source"].strip()
            if sources.setdefault(landmark, source) != source:
                raise ValueError(f"{csv_path}: landmark {landmark!r} has two sources")
    return sources


def validation_count(total: int, left: int, share: float) -> int:
    """Validation photos of a trained landmark of ``total`` photos, ``left`` after the queries."""
    if share <= 0.0 or left < 1 + MIN_TRAIN_WITH_VALIDATION:
        return 0
    return min(left - MIN_TRAIN_WITH_VALIDATION, max(1, round(share * total)))


def trained_roles(
    photos: Sequence[Photo], plan: FoldPlan
) -> tuple[list[Photo], list[Photo], list[Photo], list[Photo]]:
    """One trained landmark's photos as (references, queries, validation, training)."""
    ordered = seeded_order(photos, plan.seed)
    references = ordered[: plan.references]
    queries = ordered[plan.references : plan.references + plan.queries]
    rest = ordered[len(references) + len(queries) :]
    val = rest[: validation_count(len(ordered), len(rest), plan.val_share)]
    return references, queries, val, rest[len(val) :]


def unseen_roles(photos: Sequence[Photo], plan: FoldPlan) -> tuple[list[Photo], list[Photo]]:
    """One unseen landmark's photos as (references, queries); the rest is not used."""
    ordered = seeded_order(photos, plan.seed)
    end = plan.references + plan.unseen_queries
    return ordered[: plan.references], ordered[plan.references : end]


def source_of_every_landmark(photos: Sequence[Photo], sources: Mapping[str, str]) -> dict[str, str]:
    """The source of each landmark that has photos.

    Raises:
        ValueError: a landmark with photos has no source.
    """
    landmarks = sorted({photo.landmark_id for photo in photos})
    missing = [landmark for landmark in landmarks if landmark not in sources]
    if missing:
        raise ValueError(f"{len(missing)} landmark(s) have no source: {', '.join(missing[:5])}")
    return {landmark: sources[landmark] for landmark in landmarks}


def make_fold(
    photos: Sequence[Photo], sources: Mapping[str, str], held_out: str, plan: FoldPlan
) -> Fold:
    """The fold that holds source ``held_out`` out.

    Raises:
        ValueError: a landmark has no source, or no landmark comes from ``held_out``.
    """
    source_of = source_of_every_landmark(photos, sources)
    if held_out not in source_of.values():
        raise ValueError(f"no landmark comes from source {held_out!r}")
    roles: dict[str, list[Photo]] = {
        name: [] for name in ("gallery", "trained", "unseen", "val", "train")
    }
    for landmark, group in group_by_landmark(photos).items():
        if source_of[landmark] == held_out:
            references, queries = unseen_roles(group, plan)
            roles["unseen"] += queries
        else:
            references, queries, val, train = trained_roles(group, plan)
            roles["trained"] += queries
            roles["val"] += val
            roles["train"] += train
        roles["gallery"] += references
    unseen = sorted(lm for lm, source in source_of.items() if source == held_out)
    return Fold(
        held_out=held_out,
        gallery=tuple(sort_photos(roles["gallery"])),
        trained_queries=tuple(sort_photos(roles["trained"])),
        unseen_queries=tuple(sort_photos(roles["unseen"])),
        val=tuple(sort_photos(roles["val"])),
        train=tuple(sort_photos(roles["train"])),
        trained_landmarks=tuple(sorted(set(source_of) - set(unseen))),
        unseen_landmarks=tuple(unseen),
    )


def make_folds(
    photos: Sequence[Photo],
    sources: Mapping[str, str],
    plan: FoldPlan,
    held_out: Sequence[str] = (),
) -> list[Fold]:
    """One fold per held-out source: every source of the photos, or those in ``held_out``.

    Raises:
        ValueError: a landmark has no source, or ``held_out`` names a source with no landmark.
    """
    known = sorted(set(source_of_every_landmark(photos, sources).values()))
    unknown = sorted(set(held_out) - set(known))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; the photos' sources are {known}")
    chosen = [source for source in known if not held_out or source in held_out]
    return [make_fold(photos, sources, source, plan) for source in chosen]


def evaluation_photos(folds: Sequence[Fold]) -> list[Photo]:
    """Every photo some fold embeds plainly (gallery, queries, validation, training), sorted.

    The training photos are in it for the whitening fitted on each fold's training embeddings.

    Embedding this one list through the activation cache runs the frozen part once per photo
    for all folds and both networks; make it from all folds, not the ones run, so that the cache
    is shared between runs that restrict the sources.
    """
    photos: set[Photo] = set()
    for fold in folds:
        photos.update(fold.gallery, fold.trained_queries, fold.unseen_queries, fold.val, fold.train)
    return sort_photos(photos)


def calibration_holdout(fold: Fold, share: float, seed: int) -> tuple[str, ...]:
    """Trained landmarks whose references calibration removes, to simulate unknown landmarks.

    A seeded ``share`` of the trained landmarks that have validation photos (at least one when
    there are two or more such landmarks and ``share`` is positive): their validation photos are
    then queries whose right answer is "no landmark".
    """
    candidates = sorted({photo.landmark_id for photo in fold.val})
    if share <= 0.0 or len(candidates) < 2:
        return ()
    count = min(len(candidates) - 1, max(1, round(share * len(candidates))))

    def order(landmark: str) -> str:
        return hashlib.sha256(f"{seed}\x00calibration\x00{landmark}".encode()).hexdigest()

    return tuple(sorted(sorted(candidates, key=order)[:count]))
