"""The references of a gallery load: stable ids, duplicates, unreadable photos, the version.

A reference's id is a hash of its landmark and photo bytes
(:func:`schemas.gallery.reference_id_for`), so the same photo under the same landmark is one
reference however often it is listed, and the default gallery version
(:func:`gallery_version_of`) names exactly the set of ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.gallery import LANDMARK_ID_MAX_LENGTH, reference_id_for
from trainer.data.photos import Photo


@dataclass(frozen=True)
class Reference:
    """A photo to put in the gallery, with its stable id."""

    reference_id: str
    photo: Photo


@dataclass(frozen=True)
class BadPhoto:
    """A photo that was skipped, and why (a reason code and a message)."""

    path: Path
    reason: str
    message: str


@dataclass(frozen=True)
class ReferencePlan:
    """The distinct references of a photo list, the duplicates dropped, the unreadable files."""

    references: list[Reference]
    duplicates: list[Reference]
    bad_photos: list[BadPhoto]


def plan_references(photos: Sequence[Photo]) -> ReferencePlan:
    """Give each photo its stable reference id; drop exact duplicates and unreadable files.

    Args:
        photos: the reference photos (from :mod:`trainer.data.photos`).

    Returns:
        Distinct references in input order, duplicates (same landmark and same bytes as an
        earlier photo), and photos that could not be read or whose landmark id is too long.
    """
    references: list[Reference] = []
    duplicates: list[Reference] = []
    bad: list[BadPhoto] = []
    seen: set[str] = set()
    for photo in photos:
        if len(photo.landmark_id.encode("utf-8")) > LANDMARK_ID_MAX_LENGTH:
            bad.append(
                BadPhoto(
                    photo.path,
                    "bad_reference",
                    f"landmark id longer than {LANDMARK_ID_MAX_LENGTH} bytes",
                )
            )
            continue
        try:
            data = Path(photo.path).read_bytes()
        except OSError as error:
            bad.append(BadPhoto(photo.path, "reference_unreachable", str(error)))
            continue
        reference = Reference(reference_id_for(photo.landmark_id, data), photo)
        if reference.reference_id in seen:
            duplicates.append(reference)
            continue
        seen.add(reference.reference_id)
        references.append(reference)
    return ReferencePlan(references, duplicates, bad)


def gallery_version_of(references: Sequence[Reference]) -> str:
    """A version that names this exact set of references: ``g`` + 12 hex of a hash of the ids."""
    digest = hashlib.sha256()
    for reference_id in sorted(reference.reference_id for reference in references):
        digest.update(reference_id.encode("ascii"))
        digest.update(b"\n")
    return "g" + digest.hexdigest()[:12]
