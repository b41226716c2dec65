"""The one image-preprocessing function shared by the trainer and the worker.

Photos arrive as encoded bytes from untrusted sources. :func:`decode_photo` detects the format from
the bytes, never a file name (:mod:`schemas.photo_format`), refuses decompression bombs before
decoding a pixel and truncated files (JPEG scans cut short included:
:mod:`schemas.photo_integrity`), applies EXIF orientation, converts every colour mode to RGB
(:mod:`schemas.colour_mode`) and produces the model's square input. Pixel
scaling/normalisation is inside the model: models take float32 RGB in 0…255.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile

from schemas.colour_mode import to_rgb
from schemas.errors import InputError, ReasonCode, schema_violation
from schemas.json_fields import JsonObject, check_integer, check_keys, check_object
from schemas.photo_format import PILLOW_FORMATS, detect_format
from schemas.photo_integrity import check_jpeg_structure, check_no_grey_fill, check_not_blank

ResizeMode = Literal["center_crop", "pad"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)

MIB = 1024 * 1024

# EXIF orientation tag → the transpose that undoes it (as PIL.ImageOps.exif_transpose does).
_EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: JPEG photos are decoded at 1/2, 1/4 or 1/8 size in the DCT domain (``Image.draft``) so that
#: the shorter side stays at least this many times the input, then resized with LANCZOS. On the
#: 80 camera-size photos of the shared data (CPU time, median of per-photo best of 3): 14 ms vs
#: 24 ms for a full decode with the same filter (27 vs 49 ms on photos of 3 MP and more), output
#: within 48 dB PSNR (worst 33 dB) of the full decode. Decoding to 1x the input is faster still
#: (9 ms) but softer and aliased (36 dB, worst 26 dB against a full LANCZOS decode), a shift away
#: from what the trainer sees on its smaller photos. simplejpeg and PyTurboJPEG, at the same DCT
#: scaling, give the same pixels for the same CPU time (within 2%, ``bench/bench_decode.py``):
#: Pillow runs the same libjpeg-turbo; entropy decoding and the resize are what costs.
DRAFT_SIDE_FACTOR = 2
RESAMPLE = Image.Resampling.LANCZOS
#: Pillow first box-reduces by an integer factor while the image stays >= 3x the target, then
#: resamples: indistinguishable from plain LANCZOS (PSNR > 50 dB here), faster on large inputs.
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class PreprocessingSpec:
    """What the model expects and what the decoder accepts.

    Attributes:
        input_size: Side of the square RGB input in pixels.
        resize: ``center_crop`` (shorter side → input_size, then centre crop) or ``pad``
            (longer side → input_size, then centred on a black square).
        max_encoded_bytes: Largest encoded photo accepted.
        max_pixels: Largest width * height accepted (decompression-bomb guard).
        min_side: Smallest width or height accepted.
    """

    input_size: int = 224
    resize: ResizeMode = "center_crop"
    max_encoded_bytes: int = 32 * MIB
    max_pixels: int = 40_000_000
    min_side: int = 16

    def __post_init__(self) -> None:
        check_integer(self.input_size, "preprocessing.input_size", minimum=8, maximum=4096)
        if self.resize not in RESIZE_MODES:
            raise schema_violation(
                f"preprocessing.resize: {self.resize!r} is not one of {RESIZE_MODES}"
            )
        check_integer(self.max_encoded_bytes, "preprocessing.max_encoded_bytes", minimum=1)
        check_integer(self.max_pixels, "preprocessing.max_pixels", minimum=1)
        check_integer(self.min_side, "preprocessing.min_side", minimum=1)

    def to_dict(self) -> JsonObject:
        """Return the JSON object for this spec (as stored in the model manifest)."""
        return {
            "input_size": self.input_size,
            "resize": self.resize,
            "max_encoded_bytes": self.max_encoded_bytes,
            "max_pixels": self.max_pixels,
            "min_side": self.min_side,
        }

    @classmethod
    def from_dict(cls, document: object, where: str = "preprocessing") -> PreprocessingSpec:
        """Build a spec from its JSON object.

        Args:
            document: The parsed JSON value.
            where: Its path, for error messages.

        Returns:
            The spec.

        Raises:
            InputError: ``schema_violation`` when the object breaks the schema.
        """
        obj = check_object(document, where)
        keys = ("input_size", "resize", "max_encoded_bytes", "max_pixels", "min_side")
        check_keys(obj, where, keys)
        resize: Any = obj["resize"]
        if resize not in RESIZE_MODES:
            raise schema_violation(f"{where}.resize: {resize!r} is not one of {RESIZE_MODES}")
        return cls(
            input_size=check_integer(
                obj["input_size"], f"{where}.input_size", minimum=8, maximum=4096
            ),
            resize=resize,
            max_encoded_bytes=check_integer(
                obj["max_encoded_bytes"], f"{where}.max_encoded_bytes", minimum=1
            ),
            max_pixels=check_integer(obj["max_pixels"], f"{where}.max_pixels", minimum=1),
            min_side=check_integer(obj["min_side"], f"{where}.min_side", minimum=1),
        )


def decode_photo(
    data: bytes, spec: PreprocessingSpec, *, refuse_blank: bool = False
) -> NDArray[np.uint8]:
    """Decode an encoded photo into the model's input.

    Args:
        data: The encoded photo (JPEG, MPO, PNG, GIF, WebP, BMP or TIFF; the first frame of a
            multi-frame file).
        spec: Input size, resize mode and limits.
        refuse_blank: Also refuse a picture with no detail (every colour channel's standard
            deviation below ``BLANK_MAX_STD``), which no landmark can be recognised in.

    Returns:
        A C-contiguous ``uint8`` array of shape ``(input_size, input_size, 3)``, RGB.

    Raises:
        InputError: ``unsupported_format`` when the bytes are no known image format;
            ``image_too_large`` when the encoded size or the pixel count is over the limits
            (checked from the header, before decoding); ``image_too_small`` when a side is
            below ``min_side``; ``undecodable_image`` when the file is truncated or corrupt
            (including a JPEG whose scan stops early, which libjpeg would fill with grey);
            ``blank_image`` with ``refuse_blank`` for a blank or near-uniform picture.
        RuntimeError: when Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is on: truncated photos
            could then not be told apart.
    """
    if len(data) > spec.max_encoded_bytes:
        raise InputError(
            ReasonCode.IMAGE_TOO_LARGE,
            f"encoded photo is {len(data)} bytes, the limit is {spec.max_encoded_bytes}",
        )
    image_format = detect_format(data)
    if image_format is None:
        raise InputError(
            ReasonCode.UNSUPPORTED_FORMAT,
            # No byte of the data is quoted: fetched from a reference, they would be a remote
            # server's reply (a port-scanning oracle); sent inline, they stay in the record.
            "not a supported image format: the data starts with no signature of "
            + ", ".join(sorted(PILLOW_FORMATS)),
        )
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("decode_photo needs PIL.ImageFile.LOAD_TRUNCATED_IMAGES off")
    try:
        if image_format == "jpeg":
            check_jpeg_structure(data)
        picture = _decode(data, image_format, spec)
    except InputError:
        raise
    except Image.DecompressionBombError as error:
        raise InputError(ReasonCode.IMAGE_TOO_LARGE, f"decompression bomb: {error}") from None
    except Exception as error:
        # Decoders of untrusted bytes fail in many ways (OSError, SyntaxError, struct.error,
        # ValueError, ...); every one of them means the same thing for this photo.
        raise InputError(
            ReasonCode.UNDECODABLE_IMAGE,
            f"cannot decode {image_format} photo: {type(error).__name__}: {error}",
        ) from None
    if refuse_blank:
        check_not_blank(picture)
    return picture


def _decode(data: bytes, image_format: str, spec: PreprocessingSpec) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS[image_format]) as image:
        coded_size = image.size  # before draft reduces it
        _check_dimensions(coded_size, spec)
        orientation = _orientation(image)
        draft_side = DRAFT_SIDE_FACTOR * spec.input_size
        if image.format in ("JPEG", "MPO") and min(image.size) >= 2 * draft_side:
            # Draft picks the largest DCT scaling (1/2, 1/4, 1/8) keeping both sides >= draft_side.
            image.draft("RGB", (draft_side, draft_side))
        image.load()
        rgb = to_rgb(image)
        if image.format in ("JPEG", "MPO"):
            check_no_grey_fill(rgb, coded_size)
    transpose = _ORIENTATION_TRANSPOSE.get(orientation)
    size = spec.input_size
    if spec.resize == "center_crop":
        # Resize only the centred square: cheaper than resizing everything and cropping after.
        # A centred square is mapped onto itself by every EXIF transpose, so orienting the
        # small result afterwards gives the same pixels as orienting the full photo first.
        width, height = rgb.size
        side = min(width, height)
        left, top = (width - side) / 2.0, (height - side) / 2.0
        square = rgb.resize(
            (size, size),
            RESAMPLE,
            box=(left, top, left + side, top + side),
            reducing_gap=REDUCING_GAP,
        )
        out = square if transpose is None else square.transpose(transpose)
    else:
        oriented = rgb if transpose is None else rgb.transpose(transpose)
        out = _pad_to_square(oriented, size)
    array = np.asarray(out, dtype=np.uint8)
    if array.shape != (size, size, 3):  # pragma: no cover - guards the contract
        raise InputError(ReasonCode.UNDECODABLE_IMAGE, f"decoded to shape {array.shape}")
    return np.ascontiguousarray(array)


def _check_dimensions(size: tuple[int, int], spec: PreprocessingSpec) -> None:
    width, height = size
    if width * height > spec.max_pixels:
        raise InputError(
            ReasonCode.IMAGE_TOO_LARGE,
            f"photo is {width}x{height} = {width * height} pixels, the limit is {spec.max_pixels}",
        )
    if min(width, height) < spec.min_side:
        raise InputError(
            ReasonCode.IMAGE_TOO_SMALL,
            f"photo is {width}x{height}, the smallest side allowed is {spec.min_side}",
        )


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:
        # A corrupt EXIF block should not cost the photo: treat it as unrotated.
        return 1
    return value if isinstance(value, int) else 1


def _pad_to_square(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(new_size, RESAMPLE, reducing_gap=REDUCING_GAP)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(resized, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return canvas
