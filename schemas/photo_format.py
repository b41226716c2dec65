"""Image formats recognised from an encoded photo's leading bytes, never from a file name.

Photos arrive from untrusted sources; :func:`detect_format` names the format, and
:data:`PILLOW_FORMATS` the only Pillow plugins that :func:`schemas.preprocessing.decode_photo`
lets open it.
"""

from __future__ import annotations

#: Formats recognised from their leading bytes → the Pillow plugins allowed to open them.
#: MPO (multi-picture JPEG from cameras) is JPEG-based; Pillow reports it as ``MPO``.
PILLOW_FORMATS: dict[str, tuple[str, ...]] = {
    "jpeg": ("JPEG", "MPO"),
    "png": ("PNG",),
    "gif": ("GIF",),
    "webp": ("WEBP",),
    "bmp": ("BMP",),
    "tiff": ("TIFF",),
}
CONTENT_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
}

# BMP info-header sizes (BITMAPCOREHEADER … BITMAPV5HEADER); "BM" alone is too weak a signature.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def detect_format(data: bytes) -> str | None:
    """Detect an image format from its leading bytes.

    Args:
        data: The encoded photo.

    Returns:
        ``"jpeg"`` (including MPO), ``"png"``, ``"gif"``, ``"webp"``, ``"bmp"``, ``"tiff"``, or
        ``None`` when the bytes match none of them.
    """
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if len(head) >= 18 and head.startswith(b"BM"):
        if int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
            return "bmp"
        return None
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None
