"""Deterministic augmented views of landmark photos, for training on cached activations.

Each view is a pure function of (photo, seed, photo key, view number): the activation cache can
then compute every view once and a rerun with the same seed rebuilds the same views. The
transforms suit photos of buildings and places: a small rotation (hand-held cameras), a random
resized crop (framing and distance), a horizontal flip (most landmarks look plausible mirrored)
and colour jitter (light, weather, camera).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance


@dataclass(frozen=True)
class AugmentationSettings:
    """Ranges of the random transforms.

    Attributes:
        crop_area: range of the crop's area as a fraction of the photo.
        crop_ratio: range of the crop's aspect ratio (width / height).
        flip: whether to flip horizontally with probability 1/2.
        brightness, contrast, saturation: jitter factors drawn from ``1 ± value``.
        max_rotation_deg: rotation drawn from ``± value`` degrees.
    """

    crop_area: tuple[float, float] = (0.45, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    max_rotation_deg: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def view_rng(seed: int, photo_key: str, view: int) -> np.random.Generator:
    """The generator of one view of one photo, independent of processing order."""
    digest = hashlib.sha256(f"{seed}\x00{photo_key}\x00{view}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def augmented_view(
    photo: np.ndarray,
    out_size: int,
    rng: np.random.Generator,
    settings: AugmentationSettings | None = None,
) -> np.ndarray:
    """One random view of a photo.

    Args:
        photo: uint8 RGB ``(H, W, 3)``, ideally somewhat larger than ``out_size``.
        out_size: side of the square output.
        rng: the view's generator (see :func:`view_rng`).
        settings: transform ranges.

    Returns:
        uint8 RGB ``(out_size, out_size, 3)``.

    Raises:
        ValueError: the photo is not an RGB array.
    """
    settings = settings or AugmentationSettings()
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(f"expected an RGB photo (H, W, 3), got shape {photo.shape}")
    image = Image.fromarray(np.asarray(photo, np.uint8))
    angle = rng.uniform(-settings.max_rotation_deg, settings.max_rotation_deg)
    if settings.max_rotation_deg:
        image = _rotate_without_borders(image, angle)
    image = _random_resized_crop(image, out_size, rng, settings)
    if settings.flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer, amount in (
        (ImageEnhance.Brightness, settings.brightness),
        (ImageEnhance.Contrast, settings.contrast),
        (ImageEnhance.Color, settings.saturation),
    ):
        if amount:
            image = enhancer(image).enhance(rng.uniform(1 - amount, 1 + amount))
    return np.asarray(image, np.uint8)


def _rotate_without_borders(image: Image.Image, angle_deg: float) -> Image.Image:
    """Rotate, then crop to the largest axis-aligned rectangle with no empty corners."""
    width, height = image.size
    rotated = image.rotate(angle_deg, resample=Image.Resampling.BILINEAR, expand=False)
    theta = math.radians(abs(angle_deg))
    # For a small rotation of a w x h image, scaling by this factor removes the black corners.
    scale = 1.0 / (math.cos(theta) + math.sin(theta) * max(width, height) / min(width, height))
    crop_w, crop_h = width * scale, height * scale
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return rotated.crop((round(left), round(top), round(left + crop_w), round(top + crop_h)))


def _random_resized_crop(
    image: Image.Image, out_size: int, rng: np.random.Generator, settings: AugmentationSettings
) -> Image.Image:
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*settings.crop_area)
        log_ratio = rng.uniform(math.log(settings.crop_ratio[0]), math.log(settings.crop_ratio[1]))
        ratio = math.exp(log_ratio)
        crop_w = round(math.sqrt(target * ratio))
        crop_h = round(math.sqrt(target / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            box = (left, top, left + crop_w, top + crop_h)
            return image.resize((out_size, out_size), Image.Resampling.BILINEAR, box=box)
    side = min(width, height)
    box = ((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2)
    return image.resize((out_size, out_size), Image.Resampling.BILINEAR, box=box)
