"""The GPU decoder's logic on the CPU: which photos it takes, its geometry against the CPU path,
and the fallback of everything else to the CPU path with the same outputs.

nvImageCodec needs an NVIDIA GPU, so here the device decoder is Pillow's full decode handed to the
same code (bucketing, crop, box reduction, Lanczos resize, orientation and blank check in JAX, on
JAX's CPU backend). ``bench/gpu/gpu_decode.py`` runs the real nvImageCodec on a GPU machine.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image
from worker_fakes import (
    PUBLISHED_AT,
    DictFetcher,
    event_record,
    raw_record,
    reference_record,
)

from schemas.errors import InputError, ReasonCode
from schemas.image_event import InlinePhoto
from schemas.kafka_record import KafkaRecord
from schemas.preprocessing import PreprocessingSpec, decode_photo
from worker.adapters.gpu_decode.decoder import GpuPhotoDecoder, reduction_for
from worker.adapters.gpu_decode.jpeg_header import read_jpeg_header
from worker.decode_stage import Decoded, Pacing, Rejected, prepare_batch
from worker.embed_stage import stack_images

jnp = pytest.importorskip("jax.numpy")

SPEC = PreprocessingSpec(input_size=64)


def scene(width: int = 320, height: int = 240) -> Image.Image:
    """A photo-like picture: gradients and a few shapes, asymmetric so orientation shows."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [(x * 255 // width), (y * 255 // height), ((x + 2 * y) % 256)], axis=-1
    ).astype(np.uint8)
    pixels[height // 5 : height // 3, width // 6 : width // 2] = (250, 30, 30)
    return Image.fromarray(pixels)


def jpeg(image: Image.Image, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=92, **options)
    return buffer.getvalue()


def with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(scene(), exif=exif.tobytes())


def pillow_decode_many(photos: list[bytes]) -> list[Any]:
    """Stands in for nvImageCodec: the full decode, unoriented, RGB, (H, W, 3) uint8."""
    out = []
    for photo in photos:
        with Image.open(io.BytesIO(photo)) as image:
            out.append(np.asarray(image.convert("RGB")))
    return out


def numpy_to_bucket(images: list[Any], shape: tuple[int, int, int]) -> Any:
    padded = []
    for image in images:
        height, width = image.shape[:2]
        padding = ((0, shape[0] - height), (0, shape[1] - width), (0, 0))
        padded.append(np.pad(np.asarray(image), padding, mode="edge"))
    return jnp.asarray(np.stack(padded))


@pytest.fixture
def decoder() -> GpuPhotoDecoder:
    return GpuPhotoDecoder(pillow_decode_many, numpy_to_bucket)


def test_the_header_says_size_coding_components_and_orientation() -> None:
    header = read_jpeg_header(with_orientation(6))
    assert header is not None
    assert (header.width, header.height, header.components, header.precision) == (320, 240, 3, 8)
    assert header.baseline and not header.progressive and header.orientation == 6
    progressive = read_jpeg_header(jpeg(scene(), progressive=True))
    assert progressive is not None and progressive.progressive and not progressive.baseline
    cmyk = read_jpeg_header(jpeg(scene().convert("CMYK")))
    assert cmyk is not None and cmyk.components == 4
    grey = read_jpeg_header(jpeg(scene().convert("L")))
    assert grey is not None and grey.components == 1
    assert read_jpeg_header(jpeg(scene())).orientation == 1  # type: ignore[union-attr]
    assert read_jpeg_header(b"\x89PNG\r\n\x1a\n") is None
    assert read_jpeg_header(jpeg(scene())[:30]) is None


def test_it_takes_only_what_it_decodes_like_the_cpu_path(decoder: GpuPhotoDecoder) -> None:
    png = io.BytesIO()
    scene().save(png, "PNG")
    assert decoder.takes(jpeg(scene()), SPEC)
    assert decoder.takes(with_orientation(8), SPEC)
    assert not decoder.takes(jpeg(scene(), progressive=True), SPEC)
    assert not decoder.takes(jpeg(scene().convert("CMYK")), SPEC)
    assert not decoder.takes(jpeg(scene().convert("L")), SPEC)
    assert not decoder.takes(png.getvalue(), SPEC)
    assert not decoder.takes(jpeg(scene())[:-400], SPEC)  # a cut scan: the CPU path says why
    assert not decoder.takes(jpeg(scene()), PreprocessingSpec(input_size=64, resize="pad"))
    assert not decoder.takes(jpeg(scene()), PreprocessingSpec(input_size=64, max_pixels=1000))
    assert not decoder.takes(jpeg(scene(40, 12)), SPEC)  # below min_side


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_orientation_gives_the_cpu_paths_picture(
    decoder: GpuPhotoDecoder, orientation: int
) -> None:
    photo = with_orientation(orientation)
    (picture,) = decoder.decode([photo], SPEC)
    cpu = decode_photo(photo, SPEC).astype(int)
    difference = np.abs(np.asarray(picture).astype(int) - cpu)
    assert difference.mean() < 1.0, (orientation, difference.mean())


def test_large_photos_are_box_reduced_then_resized_close_to_the_cpu_path(
    decoder: GpuPhotoDecoder,
) -> None:
    photo = jpeg(scene(1600, 1200))
    assert reduction_for(1200, 64) == 4
    (picture,) = decoder.decode([photo], SPEC)
    assert picture.shape == (64, 64, 3) and str(picture.dtype) == "uint8"
    difference = np.abs(np.asarray(picture).astype(int) - decode_photo(photo, SPEC).astype(int))
    assert difference.mean() < 2.0


def test_a_blank_picture_is_refused_as_the_cpu_path_refuses_it(decoder: GpuPhotoDecoder) -> None:
    blank = jpeg(Image.new("RGB", (200, 150), (90, 120, 200)))
    (result,) = decoder.decode([blank], SPEC)
    assert isinstance(result, InputError) and result.reason is ReasonCode.BLANK_IMAGE
    with pytest.raises(InputError) as cpu:
        decode_photo(blank, SPEC, refuse_blank=True)
    assert cpu.value.reason is ReasonCode.BLANK_IMAGE


def test_what_the_device_cannot_decode_is_given_back_to_the_cpu() -> None:
    def failing(photos: list[bytes]) -> list[Any]:
        decoded = pillow_decode_many(photos)
        decoded[0] = None  # nvImageCodec's answer for a photo it could not decode
        decoded[1] = decoded[1][:10]  # not the size the header promised
        return decoded

    photos = [jpeg(scene()), jpeg(scene(300, 200)), jpeg(scene(200, 300))]
    results = GpuPhotoDecoder(failing, numpy_to_bucket).decode(photos, SPEC)
    assert results[0] is None and results[1] is None and results[2].shape == (64, 64, 3)


def batch(photos: Sequence[bytes], reference: bytes) -> tuple[list[KafkaRecord], DictFetcher]:
    """Inline JPEGs, one reference to ``reference``, and a record that is no event."""
    records = [
        event_record(
            InlinePhoto(
                image_id=f"p{i}", data=data, content_type="image/jpeg", published_at=PUBLISHED_AT
            ),
            i,
        )
        for i, data in enumerate(photos)
    ]
    records.append(reference_record("ref", "https://img/ref.jpg", offset=len(records)))
    records.append(raw_record(b"bad", b"not an event", offset=len(records)))
    return records, DictFetcher({"https://img/ref.jpg": reference})


def test_prepare_batch_sends_each_photo_down_the_right_path_in_order(
    decoder: GpuPhotoDecoder,
) -> None:
    png = io.BytesIO()
    scene().save(png, "PNG")
    photos = [jpeg(scene()), jpeg(scene(), progressive=True), png.getvalue(), with_orientation(3)]
    records, fetcher = batch(photos, reference=jpeg(scene(400, 300)))
    with ThreadPoolExecutor(2) as pool:
        on_gpu = prepare_batch(records, fetcher, SPEC, pool, Pacing(), decoder)
        on_cpu = prepare_batch(records, fetcher, SPEC, pool, Pacing())
    assert [type(r) for r in on_gpu] == [type(r) for r in on_cpu]
    assert [r.record.offset for r in on_gpu] == list(range(len(records)))
    device = [isinstance(r, Decoded) and not isinstance(r.image, np.ndarray) for r in on_gpu]
    assert device == [True, False, False, True, True, False]  # baseline JPEGs and the reference
    for gpu, cpu in zip(on_gpu, on_cpu, strict=True):
        if isinstance(gpu, Decoded):
            assert isinstance(cpu, Decoded)
            assert np.abs(np.asarray(gpu.image).astype(int) - cpu.image.astype(int)).mean() < 1.0
        else:
            assert isinstance(cpu, Rejected) and gpu.error.reason is cpu.error.reason
    stacked = stack_images([r.image for r in on_gpu if isinstance(r, Decoded)])
    assert stacked.shape == (5, 64, 64, 3) and not isinstance(stacked, np.ndarray)


def test_a_failing_device_decoder_costs_no_photo() -> None:
    def broken(photos: list[bytes]) -> list[Any]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    records, fetcher = batch([jpeg(scene()), jpeg(scene(300, 200))], reference=jpeg(scene()))
    with ThreadPoolExecutor(2) as pool:
        prepared = prepare_batch(
            records, fetcher, SPEC, pool, Pacing(), GpuPhotoDecoder(broken, numpy_to_bucket)
        )
    assert [type(r).__name__ for r in prepared] == ["Decoded", "Decoded", "Decoded", "Rejected"]
    assert all(isinstance(r.image, np.ndarray) for r in prepared if isinstance(r, Decoded))


def test_the_worker_refuses_to_start_the_gpu_decoder_where_it_cannot() -> None:
    from worker.adapters.gpu_decode import batch_decoder_for

    assert batch_decoder_for("cpu") is None
    with pytest.raises(RuntimeError, match=r"KERAS_BACKEND=jax|gpu-decode extra|no GPU"):
        batch_decoder_for("gpu")


def test_the_resize_is_compiled_for_a_few_group_lengths_not_every_mix(
    decoder: GpuPhotoDecoder,
) -> None:
    from worker.adapters.gpu_decode import decoder as module

    photos = [jpeg(scene(330, 250)) for _ in range(7)]
    before = module._compiled()._cache_size()
    for length in (1, 2, 3, 5, 6, 7):
        results = decoder.decode(photos[:length], SPEC)
        assert len(results) == length and all(r.shape == (64, 64, 3) for r in results)
    # lengths 3 and 5..7 reuse the programs of 4 and 8: at most 1, 2, 4, 8 were compiled
    assert module._compiled()._cache_size() - before <= 4
