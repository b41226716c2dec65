"""Every Pillow colour mode a photo decodes to, converted to the RGB the model takes.

Transparency is composited on white; 16- and 32-bit greyscale is scaled down rather than clipped.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded picture to RGB.

    Args:
        image: The loaded picture, in any Pillow mode (palette, alpha, grey, CMYK, 16-bit …).

    Returns:
        The picture in mode ``RGB`` (``image`` itself when it already is).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        has_alpha = "transparency" in image.info or (
            image.palette is not None and image.palette.mode == "RGBA"
        )
        return _composite_on_white(image.convert("RGBA")) if has_alpha else image.convert("RGB")
    if mode in _ALPHA_MODES:
        return _composite_on_white(image.convert("RGBA"))
    if mode in ("L", "1") and "transparency" in image.info:
        return _composite_on_white(image.convert("RGBA"))
    if mode.startswith("I") or mode == "F":
        return _high_depth_grey_to_rgb(image)
    return image.convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def _high_depth_grey_to_rgb(image: Image.Image) -> Image.Image:
    # 16-bit (I;16*) and 32-bit (I, F) greyscale: Pillow's own conversion clips at 255, which
    # turns most 16-bit photos white. Scale 16-bit ranges down by 256 instead.
    values = np.asarray(image).astype(np.float32)
    if image.mode.startswith("I;16") or values.max(initial=0.0) > 255.0:
        values = values / 256.0
    grey = np.clip(values, 0.0, 255.0).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
