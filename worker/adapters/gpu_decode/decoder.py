"""A batch photo decoder on an NVIDIA GPU: nvImageCodec decodes, JAX crops and resizes.

The photos of a batch that :meth:`GpuPhotoDecoder.takes` (baseline 8-bit three-component JPEGs
within the spec's limits and a centre-crop spec) are decoded in one nvImageCodec call (the GPU's
hardware JPEG decoders where it has them), each copied into a bucket-sized buffer on the device
(its size rounded up to a multiple of :data:`BUCKET`, edges repeated, so that one compiled resize
serves every photo of similar size), then cropped, box-reduced by a power of two while at least
3x the target remains (as Pillow's ``reducing_gap`` does), resized with an antialiased Lanczos-3
filter, oriented by the EXIF tag and checked for blankness, all on the GPU: the model gets a
device array, never a copy through the host (DLPack from nvImageCodec to CuPy to JAX).

What it does not take, or fails to decode, the caller decodes on the CPU path
(:func:`schemas.preprocessing.decode_photo`), which also gives the reason for bad input.
Pixels differ slightly from the CPU path's (another IDCT, chroma upsampling and resize): the
difference is measured in ``bench/gpu/gpu_decode.py``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from schemas.errors import InputError, ReasonCode
from schemas.photo_integrity import BLANK_MAX_STD, check_jpeg_structure
from schemas.preprocessing import PreprocessingSpec
from worker.adapters.gpu_decode.jpeg_header import JpegHeader, read_jpeg_header

#: Buffer sides are rounded up to a multiple of this (a resize is compiled per bucket shape).
BUCKET = 256
#: Box-reduce by a power of two while the crop stays at least this many times the input (Pillow's
#: reducing gap on the CPU path).
REDUCING_GAP = 3.0

#: Photos resized in one compiled call (bounded: a camera photo's bucket is ~36 MB on the device).
GROUP = 32

#: Decodes encoded photos on the device: one image (H, W, 3) RGB uint8 or None per photo.
DecodeMany = Callable[[list[bytes]], list[Any]]
#: Copies device images (H, W, 3) into one JAX array (n, *bucket shape), edges repeated.
ToBuckets = Callable[[list[Any], tuple[int, int, int]], Any]


class GpuPhotoDecoder:
    """Decodes a batch of photos on the device; see the module docstring.

    Args:
        decode_many: The device decoder (nvImageCodec in :meth:`on_nvidia_gpu`).
        to_buckets: Copies decoded images into one bucket-shaped JAX array.
    """

    def __init__(self, decode_many: DecodeMany, to_buckets: ToBuckets) -> None:
        self._decode_many = decode_many
        self._to_buckets = to_buckets

    @classmethod
    def on_nvidia_gpu(cls) -> GpuPhotoDecoder:
        """The decoder on this machine's first NVIDIA GPU (nvImageCodec, CuPy and JAX).

        Raises:
            RuntimeError: a library is missing or finds no GPU (the message says which).
        """
        try:
            import cupy as cp
            import jax
            from nvidia import nvimgcodec
        except ImportError as error:
            raise RuntimeError(
                f"--decoder gpu needs the gpu-decode extra (nvImageCodec, CuPy, JAX with CUDA): "
                f"{error}"
            ) from None
        if not any(d.platform == "gpu" for d in jax.devices()):
            raise RuntimeError("--decoder gpu: JAX sees no GPU")
        decoder = nvimgcodec.Decoder()
        params = nvimgcodec.DecodeParams(
            apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB
        )

        def decode_many(photos: list[bytes]) -> list[Any]:
            streams = [nvimgcodec.CodeStream(photo) for photo in photos]
            return list(decoder.decode(streams, params=params))

        def to_buckets(images: list[Any], shape: tuple[int, int, int]) -> Any:
            buckets = cp.empty((len(images), *shape), dtype=cp.uint8)
            for bucket, image in zip(buckets, images, strict=True):
                source = cp.asarray(image)
                height, width = source.shape[:2]
                bucket[:height, :width] = source
                bucket[height:, :width] = source[height - 1 : height]
                bucket[:, width:] = bucket[:, width - 1 : width]
            return jax.dlpack.from_dlpack(buckets)

        return cls(decode_many, to_buckets)

    def takes(self, data: bytes, spec: PreprocessingSpec) -> bool:
        """Whether this decoder decodes ``data`` for ``spec`` as the CPU path would.

        Baseline (sequential Huffman) 8-bit JPEGs with three components, within the spec's
        size and pixel limits, structurally complete, for a centre-crop spec. Progressive and
        CMYK JPEGs, other formats, letterboxing specs and anything suspicious go to the CPU path.
        """
        header = _eligible_header(data, spec)
        return header is not None

    def decode(self, photos: Sequence[bytes], spec: PreprocessingSpec) -> list[Any]:
        """The model input of each photo: a device array ``(S, S, 3)`` uint8, an
        :class:`InputError` (``blank_image``), or None where the CPU path must decode it.

        Every photo must be one that :meth:`takes` accepted.
        """
        if not photos:
            return []
        # takes() checked each photo; the header alone is read again here.
        headers = [read_jpeg_header(photo) for photo in photos]
        decoded = self._decode_many(list(photos))
        results: list[Any] = [None] * len(photos)
        groups: dict[tuple[tuple[int, int, int], int, int], list[tuple[int, Any, JpegHeader]]] = {}
        for position, (header, image) in enumerate(zip(headers, decoded, strict=True)):
            if header is None or image is None:
                continue
            shape = tuple(int(n) for n in image.shape)
            if shape != (header.height, header.width, 3):
                continue  # not what the header promised: the CPU path decides
            bucket = (_round_up(header.height), _round_up(header.width), 3)
            side = min(header.width, header.height)
            key = (bucket, reduction_for(side, spec.input_size), header.orientation)
            groups.setdefault(key, []).append((position, image, header))
        done: list[tuple[list[int], Any, Any]] = []
        for (bucket, reduce, orientation), members in groups.items():
            for start in range(0, len(members), GROUP):
                part = members[start : start + GROUP]
                # A group's length is padded to a power of two (repeating its last photo), so
                # that the resize is compiled for a few lengths, not for every batch's mix.
                padded = part + part[-1:] * (_padded_length(len(part)) - len(part))
                pictures, deviations = model_inputs(
                    self._to_buckets([image for _, image, _ in padded], bucket),
                    [header for _, _, header in padded],
                    spec.input_size,
                    reduce,
                    orientation,
                )
                done.append(([position for position, _, _ in part], pictures, deviations))
        for positions, pictures, deviations in done:
            for index, (position, channel_std) in enumerate(
                zip(positions, np.asarray(deviations)[: len(positions)], strict=True)
            ):
                if float(channel_std.max()) < BLANK_MAX_STD:
                    results[position] = InputError(
                        ReasonCode.BLANK_IMAGE,
                        f"blank picture: every channel's deviation is below {BLANK_MAX_STD:g}",
                    )
                else:
                    results[position] = pictures[index]
        return results


def _eligible_header(data: bytes, spec: PreprocessingSpec) -> JpegHeader | None:
    if spec.resize != "center_crop" or len(data) > spec.max_encoded_bytes:
        return None
    header = read_jpeg_header(data)
    if header is None or not header.baseline or header.precision != 8:
        return None
    if header.components != 3:
        return None
    if header.width * header.height > spec.max_pixels:
        return None
    if min(header.width, header.height) < spec.min_side:
        return None
    try:
        check_jpeg_structure(data)
    except InputError:
        return None
    return header


def _padded_length(length: int) -> int:
    return 1 << (length - 1).bit_length()


def _round_up(side: int) -> int:
    return BUCKET * math.ceil(side / BUCKET)


def reduction_for(side: int, size: int) -> int:
    """The power-of-two box reduction that keeps ``side`` at least ``REDUCING_GAP`` x ``size``."""
    factor = 1
    while factor * 2 <= min(8, side / (REDUCING_GAP * size)):
        factor *= 2
    return factor


def model_inputs(
    buckets: Any, headers: Sequence[JpegHeader], size: int, reduce: int, orientation: int
) -> tuple[Any, Any]:
    """The centred squares of decoded photos (in buckets of one shape), resized to ``size``,
    box-reduced by ``reduce`` first, and oriented.

    Returns:
        The ``(n, size, size, 3)`` uint8 pictures and their ``(n, 3)`` per-channel standard
        deviations, as JAX arrays on the device of ``buckets``.
    """
    import jax.numpy as jnp

    rows = []
    for header in headers:
        side = min(header.width, header.height)
        left, top = (header.width - side) / 2.0, (header.height - side) / 2.0
        scale = size / (side / reduce)
        rows.append([scale, scale, -top / reduce * scale, -left / reduce * scale])
    geometry = jnp.asarray(np.asarray(rows, dtype=np.float32))
    result: tuple[Any, Any] = _compiled()(
        buckets, geometry, size=size, reduce=reduce, orientation=orientation
    )
    return result


@functools.cache
def _compiled() -> Any:
    import jax
    import jax.numpy as jnp

    def one(padded: Any, geometry: Any, size: int, reduce: int, orientation: int) -> Any:
        pixels = padded.astype(jnp.float32)
        if reduce > 1:
            rows, columns, channels = pixels.shape
            pixels = pixels.reshape(
                rows // reduce, reduce, columns // reduce, reduce, channels
            ).mean(axis=(1, 3))
        resized = jax.image.scale_and_translate(
            pixels,
            (size, size, 3),
            (0, 1),
            geometry[:2],
            geometry[2:],
            method="lanczos3",
            antialias=True,
        )
        return _orient(jnp.clip(jnp.round(resized), 0, 255).astype(jnp.uint8), orientation)

    def crop_resize(
        buckets: Any, geometry: Any, *, size: int, reduce: int, orientation: int
    ) -> tuple[Any, Any]:
        pictures = jax.vmap(lambda b, g: one(b, g, size, reduce, orientation))(buckets, geometry)
        deviations = jnp.std(pictures.astype(jnp.float32), axis=(1, 2))
        return pictures, deviations

    return jax.jit(crop_resize, static_argnames=("size", "reduce", "orientation"))


def _orient(picture: Any, orientation: int) -> Any:
    """Undo an EXIF orientation as Pillow's transposes do (``schemas.preprocessing``)."""
    import jax.numpy as jnp

    if orientation == 2:
        return picture[:, ::-1]
    if orientation == 3:
        return picture[::-1, ::-1]
    if orientation == 4:
        return picture[::-1]
    if orientation == 5:
        return jnp.transpose(picture, (1, 0, 2))
    if orientation == 6:
        return jnp.rot90(picture, k=-1)
    if orientation == 7:
        return jnp.transpose(picture[::-1, ::-1], (1, 0, 2))
    if orientation == 8:
        return jnp.rot90(picture, k=1)
    return picture
