"""What a JPEG's header says, read without decoding: size, coding, components, EXIF orientation.

The GPU decoder takes only what it decodes the same way as the CPU path (baseline Huffman-coded,
8-bit, three components, a model spec it can crop for); everything else goes to the CPU path.
Reading the marker segments up to the first frame header costs microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

_SOI = b"\xff\xd8"
_BASELINE_SOF = frozenset({0xC0, 0xC1})
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_SOS = 0xDA
_APP1 = 0xE1
_EXIF = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class JpegHeader:
    """The frame header of a JPEG, and its EXIF orientation (1 when it has none).

    Attributes:
        width, height: The coded size in pixels.
        components: 1 (grey), 3 (YCbCr or RGB) or 4 (CMYK / YCCK).
        precision: Bits per sample (8, or 12 for 12-bit JPEGs).
        baseline: Sequential Huffman coding (SOF0 or SOF1): what hardware decoders take.
        progressive: Progressive coding.
        orientation: EXIF orientation, 1 to 8.
    """

    width: int
    height: int
    components: int
    precision: int
    baseline: bool
    progressive: bool
    orientation: int


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The header of ``data``, or None when it is no JPEG or its segments are malformed."""
    if not data.startswith(_SOI):
        return None
    position, orientation = 2, 1
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        end = position + 2 + length
        if length < 2 or end > len(data):
            return None
        segment = data[position + 4 : end]
        if marker == _APP1 and segment.startswith(_EXIF):
            orientation = exif_orientation(segment[len(_EXIF) :])
        elif marker in _SOF:
            if len(segment) < 6:
                return None
            return JpegHeader(
                width=int.from_bytes(segment[3:5], "big"),
                height=int.from_bytes(segment[1:3], "big"),
                components=segment[5],
                precision=segment[0],
                baseline=marker in _BASELINE_SOF,
                progressive=marker in _PROGRESSIVE_SOF,
                orientation=orientation,
            )
        elif marker == _SOS:  # a scan before any frame header
            return None
        position = end
    return None


def exif_orientation(tiff: bytes) -> int:
    """The orientation tag of IFD0 of a TIFF-structured EXIF block; 1 when absent or broken."""
    order: Literal["little", "big"]
    if tiff[:4] == b"II*\x00":
        order = "little"
    elif tiff[:4] == b"MM\x00*":
        order = "big"
    else:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for entry in range(count):
        start = ifd + 2 + 12 * entry
        if start + 12 > len(tiff):
            return 1
        if int.from_bytes(tiff[start : start + 2], order) == _ORIENTATION_TAG:
            value = int.from_bytes(tiff[start + 8 : start + 10], order)
            return value if 1 <= value <= 8 else 1
    return 1
