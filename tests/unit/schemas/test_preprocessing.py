"""Photo decoding: formats, orientation, colour modes, limits and the model input shape."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tracemalloc
import zlib
from pathlib import Path
from random import Random

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

import schemas.preprocessing as preprocessing
from schemas.errors import InputError, ReasonCode
from schemas.photo_format import detect_format
from schemas.preprocessing import PreprocessingSpec, decode_photo

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("LANDMARK_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
ODD_FORMATS = SHARED_DATA / "odd-formats"
FULLSIZE = SHARED_DATA / "photos-fullsize"
ODD_FILES = (
    [pytest.param(p, id=p.name) for p in sorted(ODD_FORMATS.iterdir())]
    if ODD_FORMATS.is_dir()
    else [
        pytest.param(
            None,
            marks=pytest.mark.skip(reason=f"{ODD_FORMATS} is missing; set LANDMARK_SHARED_DATA"),
        )
    ]
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _half_red_half_blue(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels, with almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _reason(data: bytes, spec: PreprocessingSpec | None = None) -> ReasonCode:
    with pytest.raises(InputError) as caught:
        decode_photo(data, spec or PreprocessingSpec())
    return caught.value.reason


def _is_close(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


@pytest.mark.parametrize("path", ODD_FILES)
def test_odd_format_file_decodes_to_model_input(path: Path) -> None:
    photo = decode_photo(path.read_bytes(), PreprocessingSpec(), refuse_blank=True)
    assert photo.shape == (224, 224, 3)
    assert photo.dtype == np.dtype(np.uint8)
    assert photo.flags.c_contiguous


def test_odd_formats_folder_is_present() -> None:
    if not ODD_FORMATS.is_dir():
        pytest.skip(f"{ODD_FORMATS} is missing; set LANDMARK_SHARED_DATA")
    assert len(ODD_FILES) >= 8


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("JPEG", "jpeg"),
        ("PNG", "png"),
        ("GIF", "gif"),
        ("WEBP", "webp"),
        ("BMP", "bmp"),
        ("TIFF", "tiff"),
    ],
)
def test_format_is_detected_from_bytes(fmt: str, expected: str) -> None:
    assert detect_format(_encode(Image.new("RGB", (20, 20)), fmt)) == expected


def test_bytes_starting_with_bm_but_no_bmp_header_are_not_bmp() -> None:
    assert detect_format(b"BM" + b"\x00" * 40) is None


def test_random_bytes_are_an_unsupported_format() -> None:
    data = Random(7).randbytes(4096)
    assert detect_format(data) is None
    assert _reason(data) is ReasonCode.UNSUPPORTED_FORMAT


def test_empty_bytes_are_an_unsupported_format() -> None:
    assert _reason(b"") is ReasonCode.UNSUPPORTED_FORMAT


def test_truncated_jpeg_is_undecodable() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG", quality=90)
    assert _reason(data[: len(data) // 2]) is ReasonCode.UNDECODABLE_IMAGE


def test_png_with_garbage_after_the_signature_is_undecodable() -> None:
    assert _reason(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100) is ReasonCode.UNDECODABLE_IMAGE


def test_decompression_bomb_is_refused_without_allocating() -> None:
    bomb = _png_claiming(100_000, 100_000)
    tracemalloc.start()
    try:
        assert _reason(bomb) is ReasonCode.IMAGE_TOO_LARGE
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


@pytest.mark.parametrize(("kind", "prefix"), [(b"zTXt", b"Comment\0\0"), (b"iCCP", b"icc\0\0")])
def test_compressed_chunk_bomb_is_refused_without_inflating_it(kind: bytes, prefix: bytes) -> None:
    """64 MiB of zeros in a 64 KiB text or colour-profile chunk: Pillow stops at 1 MiB."""
    deflater = zlib.compressobj(9)
    body = b"".join(deflater.compress(bytes(1 << 20)) for _ in range(64)) + deflater.flush()
    chunk = struct.pack(">I", len(prefix + body)) + kind + prefix + body
    chunk += struct.pack(">I", zlib.crc32(kind + prefix + body))
    photo = _encode(_half_red_half_blue(64, 64), "PNG")
    bomb = photo[:33] + chunk + photo[33:]  # after the signature and IHDR
    tracemalloc.start()
    try:
        assert _reason(bomb) is ReasonCode.UNDECODABLE_IMAGE
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_bomb_is_refused_even_with_pillows_global_limit_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert _reason(_png_claiming(100_000, 100_000)) is ReasonCode.IMAGE_TOO_LARGE


def test_pixel_count_over_the_spec_limit_is_too_large() -> None:
    spec = PreprocessingSpec(max_pixels=1_000_000)
    assert _reason(_png_claiming(2000, 1000), spec) is ReasonCode.IMAGE_TOO_LARGE


def test_encoded_size_over_the_limit_is_too_large() -> None:
    data = _encode(Image.new("RGB", (64, 64)), "PNG")
    spec = PreprocessingSpec(max_encoded_bytes=len(data) - 1)
    assert _reason(data, spec) is ReasonCode.IMAGE_TOO_LARGE


def test_photo_below_min_side_is_too_small() -> None:
    data = _encode(Image.new("RGB", (200, 8)), "PNG")
    assert _reason(data) is ReasonCode.IMAGE_TOO_SMALL


@pytest.mark.parametrize("size", [(64, 32), (1024, 512)], ids=["full-decode", "reduced-decode"])
def test_exif_orientation_is_applied(size: tuple[int, int]) -> None:
    """Orientation 6 (rotate 90° clockwise to display): the red left half ends up on top."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(_half_red_half_blue(*size), "JPEG", exif=exif.tobytes(), quality=95)
    photo = decode_photo(data, PreprocessingSpec(input_size=32))
    assert _is_close(photo[2, 16], RED) and _is_close(photo[29, 16], BLUE)


def test_photo_without_orientation_is_not_rotated() -> None:
    data = _encode(_half_red_half_blue(64, 32), "JPEG", quality=95)
    photo = decode_photo(data, PreprocessingSpec(input_size=32))
    assert _is_close(photo[16, 2], RED) and _is_close(photo[16, 29], BLUE)


def test_transparent_pixels_are_composited_on_white() -> None:
    data = _encode(Image.new("RGBA", (32, 32), (255, 0, 0, 0)), "PNG")
    assert np.all(decode_photo(data, PreprocessingSpec(input_size=16)) == 255)


def test_half_transparent_pixels_are_blended_with_white() -> None:
    data = _encode(Image.new("RGBA", (32, 32), (0, 0, 0, 128)), "PNG")
    photo = decode_photo(data, PreprocessingSpec(input_size=16))
    assert np.all(np.abs(photo.astype(int) - 127) <= 1)


def test_palette_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([10, 20, 30] * 256)
    data = _encode(image, "PNG", transparency=0)
    assert np.all(decode_photo(data, PreprocessingSpec(input_size=16)) == 255)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = Image.fromarray(np.full((32, 32), 0x8000, dtype=np.uint16))
    photo = decode_photo(_encode(grey, "PNG"), PreprocessingSpec(input_size=16))
    assert np.all(photo == 128)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = _encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    photo = decode_photo(data, PreprocessingSpec(input_size=16))
    assert _is_close(photo[8, 8], RED)


def test_first_frame_of_an_animated_gif_is_used() -> None:
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    photo = decode_photo(buffer.getvalue(), PreprocessingSpec(input_size=16))
    assert _is_close(photo[8, 8], RED, tolerance=5)


def test_center_crop_keeps_the_middle_of_a_wide_photo() -> None:
    image = Image.new("RGB", (300, 100), BLUE)
    image.paste(RED, (100, 0, 200, 100))
    photo = decode_photo(_encode(image, "PNG"), PreprocessingSpec(input_size=50))
    # The resampling filter reaches a few pixels past the crop, so only the edges blend.
    assert np.all(photo[:, 4:-4] == np.array(RED, dtype=np.uint8))
    assert photo[:, :, 0].min() > 200


def test_pad_mode_keeps_the_whole_photo_on_black() -> None:
    image = Image.new("RGB", (64, 32), RED)
    photo = decode_photo(_encode(image, "PNG"), PreprocessingSpec(input_size=32, resize="pad"))
    assert np.all(photo[0] == 0) and np.all(photo[16] == np.array(RED, dtype=np.uint8))


def test_reduced_size_jpeg_decoding_stays_close_to_the_full_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    photos = sorted(FULLSIZE.glob("*.jpg")) if FULLSIZE.is_dir() else []
    if not photos:
        pytest.skip(f"{FULLSIZE} has no photos; set LANDMARK_SHARED_DATA")
    data = max(photos, key=lambda p: p.stat().st_size).read_bytes()
    reduced = decode_photo(data, PreprocessingSpec()).astype(np.float64)
    monkeypatch.setattr(preprocessing, "DRAFT_SIDE_FACTOR", 10**6)
    full = decode_photo(data, PreprocessingSpec()).astype(np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((reduced - full) ** 2))
    assert psnr > 35


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=16, max_value=300),
    st.integers(min_value=16, max_value=300),
    st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I;16"]),
    st.sampled_from(["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"]),
    st.sampled_from([8, 32, 224]),
    st.sampled_from(["center_crop", "pad"]),
)
def test_any_size_mode_and_format_decodes_to_the_input_shape(
    width: int, height: int, mode: str, fmt: str, size: int, resize: str
) -> None:
    image = Image.new(mode, (width, height))
    try:
        data = _encode(image, fmt)
    except (OSError, ValueError, KeyError):
        assume(False)  # Pillow cannot write this mode in this format
    photo = decode_photo(data, PreprocessingSpec(input_size=size, resize=resize))  # type: ignore[arg-type]
    assert photo.shape == (size, size, 3)
    assert photo.dtype == np.dtype(np.uint8)


def test_spec_round_trips_through_its_dict() -> None:
    spec = PreprocessingSpec(input_size=299, resize="pad", max_pixels=5, min_side=3)
    assert PreprocessingSpec.from_dict(spec.to_dict()) == spec


def test_input_error_survives_pickling() -> None:
    error = InputError(ReasonCode.IMAGE_TOO_LARGE, "too big")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.message) == (ReasonCode.IMAGE_TOO_LARGE, "too big")
