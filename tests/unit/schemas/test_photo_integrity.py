"""Photos with no whole picture: JPEG scans cut short (libjpeg's grey fill), blank pictures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from schemas import photo_integrity
from schemas.errors import InputError, ReasonCode
from schemas.photo_integrity import (
    BLANK_MAX_STD,
    GREY_FILL,
    channel_deviations,
    check_jpeg_structure,
    check_no_grey_fill,
    check_not_blank,
)
from schemas.preprocessing import PreprocessingSpec, decode_photo

SPEC = PreprocessingSpec()
EOI = b"\xff\xd9"


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def _scan_start(data: bytes) -> int:
    """Position of the first byte of entropy-coded data (after the first SOS segment)."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def _jpeg_claiming(width: int, height: int, scan_bytes: int = 20) -> bytes:
    """The issue's record: a real JPEG header declaring width x height, a few scan bytes, EOI."""
    data = bytearray(_jpeg(_noise(64, 64)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data[: _scan_start(bytes(data)) + scan_bytes]) + EOI


def _reason(data: bytes, refuse_blank: bool = False) -> ReasonCode:
    with pytest.raises(InputError) as caught:
        decode_photo(data, SPEC, refuse_blank=refuse_blank)
    return caught.value.reason


def test_tiny_jpeg_declaring_6000x6000_is_undecodable() -> None:
    """645 bytes for 36 MP decoded to libjpeg's flat grey and was tagged (confidence 0.817)."""
    data = _jpeg_claiming(6000, 6000)
    assert len(data) < 1000
    assert _reason(data) is ReasonCode.UNDECODABLE_IMAGE


def test_scan_cut_midway_and_closed_with_eoi_is_undecodable() -> None:
    """Enough bytes for the size, but the lower part of the picture would be grey fill."""
    data = _jpeg(_noise(256, 256))
    start = _scan_start(data)
    cut = data[: start + (len(data) - start) * 6 // 10] + EOI
    assert _reason(cut) is ReasonCode.UNDECODABLE_IMAGE


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_progressive_scan_cut_in_its_first_pass_is_undecodable(mode: str) -> None:
    data = _jpeg(_noise(512, 384).convert(mode), progressive=True)
    start = _scan_start(data)
    cut = data[: start + 200] + EOI
    assert _reason(cut) is ReasonCode.UNDECODABLE_IMAGE


@pytest.mark.parametrize("options", [{}, {"progressive": True}], ids=["baseline", "progressive"])
def test_camera_size_scans_are_read_to_their_end_and_a_cut_one_is_refused(
    options: dict[str, object],
) -> None:
    """Scans over 256 KiB are searched with numpy: the same verdicts as on small photos."""
    data = _jpeg(_noise(900, 700, seed=3), **options)
    assert len(data) - _scan_start(data) > photo_integrity._VECTOR_CHUNK
    check_jpeg_structure(data)
    with pytest.raises(InputError, match="inside a scan"):
        check_jpeg_structure(data[: len(data) * 9 // 10])


_MARKER_BYTES = st.sampled_from([0xFF, 0x00, 0xD0, 0xD7, 0xD8, 0xD9, 0xDA, 0x01, 0xCF, 0x5A])


@settings(max_examples=400, deadline=None)
@given(
    data=st.lists(_MARKER_BYTES, max_size=80).map(bytes),
    position=st.integers(0, 82),
    chunk=st.integers(1, 17),
)
def test_a_scans_end_is_found_alike_in_chunks_and_by_the_regular_expression(
    data: bytes, position: int, chunk: int
) -> None:
    found = photo_integrity._MARKER.search(data, position)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(photo_integrity, "_VECTOR_CHUNK", chunk)
        assert photo_integrity._scan_end(data, position) == (found and found.start())


def test_jpeg_without_its_end_of_image_marker_is_refused_before_decoding() -> None:
    data = _jpeg(_noise(64, 64))
    with pytest.raises(InputError, match="ends inside a scan"):
        check_jpeg_structure(data[:-2])


def test_decoding_refuses_to_run_with_pillows_truncated_loading_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With it on Pillow keeps what a cut file holds; the contract could not be kept."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_photo(_jpeg(_noise(64, 64))[:-300], SPEC)


@pytest.mark.parametrize(
    "options",
    [{}, {"progressive": True}, {"restart_marker_blocks": 4}, {"subsampling": 0}],
    ids=["baseline", "progressive", "restart-markers", "4:4:4"],
)
def test_complete_jpegs_still_decode(options: dict[str, object]) -> None:
    photo = decode_photo(_jpeg(_noise(300, 200), **options), SPEC, refuse_blank=True)
    assert photo.shape == (224, 224, 3)


def test_stray_bytes_before_a_marker_and_data_after_eoi_are_tolerated() -> None:
    """libjpeg only warns about them, and cameras write both (MPO pictures, trailers)."""
    data = _jpeg(_noise(64, 64))
    dqt = data.index(b"\xff\xdb")
    odd = data[:dqt] + b"\x00\x00" + data[dqt:] + b"trailer" + _jpeg(_noise(32, 32))
    assert decode_photo(odd, SPEC).shape == (224, 224, 3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (200, 30, 40)])
def test_blank_picture_is_refused_when_asked(fmt: str, colour: tuple[int, int, int]) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), colour).save(buffer, fmt)
    assert _reason(buffer.getvalue(), refuse_blank=True) is ReasonCode.BLANK_IMAGE


def test_faint_noise_below_the_threshold_is_blank() -> None:
    rng = np.random.default_rng(1)
    pixels = np.clip(100 + rng.normal(0, BLANK_MAX_STD / 3, (240, 320, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "PNG")
    assert _reason(buffer.getvalue(), refuse_blank=True) is ReasonCode.BLANK_IMAGE


def test_blank_picture_is_decoded_when_not_asked() -> None:
    """Off unless asked: decoding alone does not judge what the picture shows."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 40)).save(buffer, "PNG")
    assert decode_photo(buffer.getvalue(), SPEC).shape == (224, 224, 3)


@pytest.mark.parametrize(
    "shape", [(224, 224, 3), (17, 5, 3), (8, 8, 4), (9, 9, 1), (30, 30), (5, 5, 2)]
)
@pytest.mark.parametrize("spread", [0.0, 0.5, BLANK_MAX_STD, 60.0])
def test_channel_deviations_are_numpys_standard_deviations(
    shape: tuple[int, ...], spread: float
) -> None:
    """From per-channel histograms, as numpy computes them over the pixels (to rounding)."""
    rng = np.random.default_rng(len(shape) * 100 + int(spread * 10))
    levels = np.clip(np.rint(rng.normal(100, spread, shape)), 0, 255).astype(np.uint8)
    flat = levels.reshape(-1, shape[2] if len(shape) == 3 else 1)
    np.testing.assert_allclose(channel_deviations(levels), flat.std(axis=0), rtol=0, atol=1e-9)
    strided = levels[::2, ::3]  # not contiguous
    np.testing.assert_allclose(
        channel_deviations(strided),
        strided.reshape(-1, flat.shape[1]).std(axis=0),
        rtol=0,
        atol=1e-9,
    )


def test_blank_decision_is_the_same_as_numpys_around_the_threshold() -> None:
    rng = np.random.default_rng(3)
    for spread in np.linspace(BLANK_MAX_STD * 0.8, BLANK_MAX_STD * 1.2, 41):
        picture = np.clip(np.rint(rng.normal(128, spread, (64, 64, 3))), 0, 255).astype(np.uint8)
        numpy_blank = float(picture.reshape(-1, 3).std(axis=0).max()) < BLANK_MAX_STD
        try:
            check_not_blank(picture)
        except InputError:
            assert numpy_blank
        else:
            assert not numpy_blank


def test_grey_fill_is_spotted_in_an_rgbx_picture_too() -> None:
    """Decoders that write 4 bytes a pixel (the padding byte 255) leave the colour bands grey."""
    pixels = np.asarray(_noise(64, 64).convert("RGBX")).copy()
    pixels[-8:, -8:, :3] = GREY_FILL
    picture = Image.frombuffer("RGBX", (64, 64), pixels, "raw", "RGBX", 0, 1)
    with pytest.raises(InputError, match="grey fill"):
        check_no_grey_fill(picture, (64, 64))
    check_no_grey_fill(_noise(64, 64).convert("RGBX"), (64, 64))
