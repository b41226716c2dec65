"""Seeded random records for the fuzz run: valid photos and references, and every way to break them.

Each record comes with what it must get: ``"tag"`` (a valid photo), ``"dead"`` (a dead letter,
any reason) or ``"any"`` (exactly one output, either). The generator is a pure function of its
``random.Random``, so a failing seed can be run again.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.integration.poison_rig import RawHeaderName

_SCHEMA = ("schema-version", b"1")


@dataclass(frozen=True)
class FuzzRecord:
    """A record to send: key, value, headers (names of any kind), and what it must get."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    expect: str


@dataclass(frozen=True)
class FuzzPlace:
    """What references may point to: photos under the worker's root, and a host's address."""

    root: Path
    photo_files: tuple[Path, ...]
    host: str


def small_photo(rng: random.Random, fmt: str = "JPEG") -> bytes:
    """A textured photo of 48 to 96 pixels a side (quick to decode, never blank)."""
    side = rng.randint(48, 96)
    pixels = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (side, side, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def _image_id(rng: random.Random, index: int) -> str:
    return f"fz{index}-{rng.getrandbits(24):06x}"


def _reference(image_id: str, uri: str) -> bytes:
    return json.dumps({"image_id": image_id, "uri": uri}).encode()


def _photo(rng: random.Random, i: int, place: FuzzPlace) -> FuzzRecord:
    fmt = rng.choice(["JPEG", "PNG", "WEBP", "BMP"])
    content = ("content-type", f"image/{fmt.lower()}".encode())
    return FuzzRecord(_image_id(rng, i).encode(), small_photo(rng, fmt), [content, _SCHEMA], "tag")


def _good_reference(rng: random.Random, i: int, place: FuzzPlace) -> FuzzRecord:
    image_id = _image_id(rng, i)
    uri = rng.choice(place.photo_files).as_uri()
    headers = [("content-type", b"application/json"), _SCHEMA]
    return FuzzRecord(image_id.encode(), _reference(image_id, uri), headers, "tag")


def _bad_reference(rng: random.Random, i: int, place: FuzzPlace) -> FuzzRecord:
    # Not the hostile host's slow path: each fetch takes the worker's whole fetch budget (the
    # poison-record suite sends it), and the run must stay short.
    image_id = _image_id(rng, i)
    uri = rng.choice(
        [
            (place.root / "missing.jpg").as_uri(),
            (place.root / ".." / "etc" / "passwd").as_uri(),
            "file:///etc/passwd",
            "ftp://example.org/a.jpg",
            f"http://{place.host}/short.jpg",
            f"http://{place.host}/not-http.jpg",
            "http://127.0.0.1:99999/a.jpg",
            "http://127.0.0.1:1:2/a.jpg",
            "http://not-allowed.example/a.jpg",
            "http://[::1/a.jpg",
            "x" * rng.randint(1, 3000),
        ]
    )
    headers = [("content-type", b"application/json"), _SCHEMA]
    return FuzzRecord(image_id.encode(), _reference(image_id, uri), headers, "dead")


def _broken_reference(rng: random.Random, i: int, place: FuzzPlace) -> FuzzRecord:
    image_id = _image_id(rng, i)
    value = rng.choice(
        [
            b"{",
            b"[]",
            b"null",
            json.dumps({"image_id": "someone-else", "uri": "file:///a.jpg"}).encode(),
            json.dumps({"image_id": image_id}).encode(),
            json.dumps({"image_id": image_id, "uri": 7, "extra": True}).encode(),
            rng.randbytes(rng.randint(1, 200)),
        ]
    )
    headers = [("content-type", b"application/json"), _SCHEMA]
    return FuzzRecord(image_id.encode(), value, headers, "dead")


def _garbage_value(rng: random.Random, i: int, place: FuzzPlace) -> FuzzRecord:
    photo = small_photo(rng)
    value = rng.choice(
        [
            rng.randbytes(rng.randint(1, 5000)),
            photo[: rng.randint(1, len(photo) - 1)],
            b"\xff\xd8\xff" + rng.randbytes(rng.randint(0, 2000)),
            b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(0, 2000)),
            b"GIF89a" + rng.randbytes(rng.randint(0, 100)),
        ]
    )
    headers = [("content-type", b"image/jpeg"), _SCHEMA]
    return FuzzRecord(_image_id(rng, i).encode(), value, headers, "dead")


def _broken_envelope(rng: random.Random, i: int, place: FuzzPlace) -> FuzzRecord:
    key = rng.choice([None, b"", rng.randbytes(rng.randint(1, 40)), b"x" * rng.randint(300, 5000)])
    headers = rng.choice(
        [
            [],
            [("content-type", b"image/jpeg")],
            [_SCHEMA],
            [("content-type", b"image/jpeg"), ("schema-version", b"2")],
            [("content-type", b"image/jpeg"), _SCHEMA, _SCHEMA],
            [("content-type", rng.randbytes(8)), _SCHEMA],
            [("content-type", b"image/jpeg"), _SCHEMA, ("published-at", b"yesterday")],
        ]
    )
    value = rng.choice([None, b"", small_photo(rng)])
    if key is not None and key.isascii() and 0 < len(key) < 200 and value and len(headers) == 2:
        key = None  # only broken envelopes here
    if key is None and value is None:
        value = b""  # kafka-python sends no record without either
    return FuzzRecord(key, value, headers, "dead")


def _random_headers(rng: random.Random, i: int, place: FuzzPlace) -> FuzzRecord:
    headers = [("content-type", b"image/png"), _SCHEMA]
    for _ in range(rng.randint(1, 12)):
        name = rng.choice(
            [
                "x-" + rng.randbytes(4).hex(),
                "",
                "content-type",
                "trace-id",
                "source",
                "é" * rng.randint(1, 50),
                "n" * rng.randint(100, 3000),
            ]
        )
        headers.append((name, rng.randbytes(rng.choice([0, 1, 10, 1000, 70_000]))))
    rng.shuffle(headers)
    return FuzzRecord(_image_id(rng, i).encode(), small_photo(rng, "PNG"), headers, "any")


def non_utf8_header_name(rng: random.Random, i: int, place: FuzzPlace) -> FuzzRecord:
    """A record the Kafka client cannot parse (send it in a batch of its own)."""
    record = _photo(rng, i, place)
    name = RawHeaderName(rng.choice([b"\xff", b"\xc3\x28", b"a\x80b", rng.randbytes(6) + b"\xff"]))
    return FuzzRecord(record.key, record.value, [*record.headers, (name, b"v")], "dead")


_KINDS: list[tuple[Callable[[random.Random, int, FuzzPlace], FuzzRecord], int]] = [
    (_photo, 12),
    (_good_reference, 6),
    (_bad_reference, 12),
    (_broken_reference, 10),
    (_garbage_value, 20),
    (_broken_envelope, 20),
    (_random_headers, 20),
]


def fuzz_records(rng: random.Random, count: int, place: FuzzPlace) -> list[FuzzRecord]:
    """``count`` records drawn from the kinds above (their weights), in a seeded order."""
    makers, weights = zip(*_KINDS, strict=True)
    return [rng.choices(makers, weights)[0](rng, index, place) for index in range(count)]
