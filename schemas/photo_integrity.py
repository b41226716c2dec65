"""Checks that a photo holds a whole picture: JPEG scans that are all there, and not a blank.

libjpeg does not fail on a JPEG whose scan stops early at an end-of-image marker: it warns
(Pillow drops the warning) and fills every block it did not get with mid grey. A 645-byte file
declaring 6000x6000 pixels thus decoded to a flat grey picture, and was tagged with confidence
0.817. :func:`check_jpeg_structure` reads the marker segments before decoding; after decoding,
:func:`check_no_grey_fill` spots the fill, and :func:`check_not_blank` refuses pictures with no detail.
"""

from __future__ import annotations

import math
import re

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from schemas.errors import InputError, ReasonCode

#: A picture whose every channel has a standard deviation below this (on 0…255, measured on the
#: model input) is blank: a lens cap, a flat placeholder, the grey fill of a cut JPEG. Among the
#: 5,219 photos of the shared landmark data set the lowest is 19.7, so this leaves a wide margin.
BLANK_MAX_STD = 2.0
#: The grey that libjpeg gives a block with no coefficients (DC 0, level shift 128).
GREY_FILL = 128
#: Huffman coding spends at least one bit on each 8x8 block's DC coefficient, so a complete scan
#: has at least blocks / 8 bytes; refuse below half of that.
_MIN_SCAN_BYTES_PER_BLOCK = 1 / 16
# A marker in entropy-coded data: 0xFF followed by neither a stuffed 0x00 nor a restart marker.
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
#: Scans are searched for their end this many bytes at a time with numpy, which leaves the
#: interpreter lock to other threads while it compares (the regular expression holds it: 0.1-0.3
#: ms a camera photo, in every decoding thread of a worker at once); shorter scans by the
#: regular expression, cheaper there.
_VECTOR_CHUNK = 256 * 1024
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)})
_ARITHMETIC_SOF = frozenset({*range(0xC9, 0xCC), *range(0xCD, 0xD0)})
_SOS, _EOI = 0xDA, 0xD9


def check_jpeg_structure(data: bytes) -> None:
    """Refuse a JPEG whose scan data ends early or is far too short for its declared size.

    Reads the marker segments (not the compressed data) up to the first end-of-image marker,
    so trailing data (an MPO's further pictures, a camera's trailer) does not matter.

    Args:
        data: The encoded JPEG (starting with SOI).

    Raises:
        InputError: ``undecodable_image`` when the data ends inside a segment or scan, before
            the end-of-image marker, or when the scans hold fewer bytes than the declared
            number of 8x8 blocks needs.
    """
    position, scan_bytes = 2, 0
    blocks, arithmetic = 0, False
    while True:
        marker, position = _next_marker(data, position)
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            continue
        if position + 2 > len(data):
            raise _cut("inside a marker segment")
        length = int.from_bytes(data[position : position + 2], "big")
        segment_end = position + length
        if length < 2 or segment_end > len(data):
            raise _cut("inside a marker segment")
        if marker in _SOF and length >= 7:
            height = int.from_bytes(data[position + 3 : position + 5], "big")
            width = int.from_bytes(data[position + 5 : position + 7], "big")
            blocks = math.ceil(width / 8) * math.ceil(height / 8)
            arithmetic = marker in _ARITHMETIC_SOF
        position = segment_end
        if marker == _SOS:
            found = _scan_end(data, position)
            if found is None:
                raise _cut("inside a scan")
            scan_bytes += found - position
            position = found
    # Arithmetic coding can spend less than a bit on a block; such files are rare and fall to
    # the grey-fill and blank checks instead.
    if not arithmetic and scan_bytes < blocks * _MIN_SCAN_BYTES_PER_BLOCK:
        raise InputError(
            ReasonCode.UNDECODABLE_IMAGE,
            f"truncated JPEG: {scan_bytes} bytes of scan data for {blocks} blocks of 8x8 pixels",
        )


def check_no_grey_fill(decoded: Image.Image, coded_size: tuple[int, int]) -> None:
    """Refuse a decoded JPEG that ends in libjpeg's grey fill, the mark of a scan cut short.

    The fill covers every block from where the scan stopped to the last one, so the last block
    (bottom right, before any EXIF rotation) is exactly grey in every channel; in a real photo
    the sensor's noise alone makes that practically impossible.

    Args:
        decoded: The decoded picture in RGB (or RGBX: the colour bands are looked at), maybe
            reduced (``draft``).
        coded_size: Width and height declared in the JPEG.

    Raises:
        InputError: ``undecodable_image`` when the bottom-right block is exactly the fill grey.
    """
    width, height = decoded.size
    side = max(1, round(8 * width / coded_size[0]))
    corner = decoded.crop((max(0, width - side), max(0, height - side), width, height))
    if np.all(np.asarray(corner)[..., :3] == GREY_FILL):
        raise InputError(
            ReasonCode.UNDECODABLE_IMAGE,
            "truncated JPEG: the scan stops early (the rest decodes to libjpeg's grey fill)",
        )


def check_not_blank(picture: NDArray[np.uint8], max_std: float = BLANK_MAX_STD) -> None:
    """Refuse a blank or near-uniform picture: nothing in it can be recognised.

    Args:
        picture: The model input, ``(size, size, 3)`` RGB.
        max_std: Largest per-channel standard deviation that still counts as blank.

    Raises:
        InputError: ``blank_image`` when every channel's standard deviation is below ``max_std``.
    """
    deviations = channel_deviations(picture)
    if float(deviations.max()) < max_std:
        raise InputError(
            ReasonCode.BLANK_IMAGE,
            f"blank picture: the largest standard deviation of a colour channel is "
            f"{float(deviations.max()):.2f}, below {max_std}",
        )


def channel_deviations(picture: NDArray[np.uint8]) -> NDArray[np.float64]:
    """Standard deviation of each colour channel of a ``(height, width, channels)`` picture.

    From Pillow's per-channel histogram (one pass in C) and the moments of its 256 bins: the
    values of numpy's ``std`` over the interleaved channels (to 1e-11) at a tenth of the cost:
    0.1 ms instead of 1.3 ms for 224 x 224 x 3, which was nearly half of the worker's decoding
    of a 448-px landmark photo (``bench/bench_decode.py``, ``pillow, refuse_blank``).
    """
    if picture.ndim == 2:
        picture = picture[:, :, np.newaxis]
    channels = picture.shape[-1]
    if picture.dtype != np.uint8 or channels not in (1, 3, 4):  # no 8-bit Pillow mode for it
        return np.asarray(picture.reshape(-1, channels).std(axis=0), dtype=np.float64)
    image = Image.fromarray(picture[:, :, 0] if channels == 1 else picture)
    counts = np.asarray(image.histogram(), dtype=np.float64)
    counts = counts.reshape(channels, 256)
    levels = np.arange(256, dtype=np.float64)
    pixels = counts.sum(axis=1)
    means = counts @ levels / pixels
    variances = (counts * (levels - means[:, np.newaxis]) ** 2).sum(axis=1) / pixels
    return np.asarray(np.sqrt(variances), dtype=np.float64)


def _scan_end(data: bytes, position: int) -> int | None:
    """Where the first marker after ``position`` starts (what :data:`_MARKER` finds), or None."""
    if len(data) - position <= _VECTOR_CHUNK:
        found = _MARKER.search(data, position)
        return None if found is None else found.start()
    array = np.frombuffer(data, np.uint8)
    for start in range(position, len(array) - 1, _VECTOR_CHUNK):
        # One byte past the chunk: a 0xFF at its end is judged by the byte after it.
        window = array[start : start + _VECTOR_CHUNK + 1]
        fills = np.flatnonzero(window[:-1] == 0xFF)
        if not len(fills):
            continue
        following = window[fills + 1]
        markers = np.flatnonzero((following != 0) & ((following < 0xD0) | (following > 0xD7)))
        if len(markers):
            return start + int(fills[markers[0]])
    return None


def _next_marker(data: bytes, position: int) -> tuple[int, int]:
    """Return the next marker's code (from ``position``) and the position after it.

    Skips stray bytes before the marker and fill bytes (``0xFF``) as libjpeg does (it only warns
    about them, and some cameras write them).
    """
    while True:
        position = data.find(b"\xff", position)
        if position < 0:
            raise _cut("before the end-of-image marker")
        while position < len(data) and data[position] == 0xFF:
            position += 1
        if position >= len(data):
            raise _cut("before the end-of-image marker")
        if data[position] != 0x00:  # 0xFF 0x00 is no marker: keep looking
            return data[position], position + 1
        position += 1


def _cut(where: str) -> InputError:
    return InputError(ReasonCode.UNDECODABLE_IMAGE, f"truncated JPEG: the data ends {where}")
