"""In-memory implementations of the worker's ports, for unit tests of the pure core only.

The embedder maps a photo to the unit vector of its mean colour; the index is a brute-force
search over a handful of reference colours. Both are exact, so expected tags can be derived by hand.
"""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from schemas.errors import InputError, ReasonCode
from schemas.image_event import InlinePhoto, PhotoReference, encode_image_event
from schemas.kafka_record import KafkaRecord
from schemas.tag_event import Neighbour

RED, GREEN, BLUE, GREY = (220, 20, 20), (20, 220, 20), (20, 20, 220), (128, 128, 128)
REFERENCE_COLOURS = {"red_fort": RED, "green_gate": GREEN, "blue_mosque": BLUE}
PUBLISHED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector, axis=-1, keepdims=True)).astype(np.float32)


class MeanColourEmbedder:
    """Embeds a photo as its unit mean-colour vector; can be told to fail on some photos."""

    model_version = "model-a"
    embedding_dim = 3

    def __init__(
        self,
        fail_on_colour: tuple[int, int, int] | None = None,
        non_unit_on_colour: tuple[int, int, int] | None = None,
    ) -> None:
        self.calls: list[int] = []
        self._fail_on = fail_on_colour
        self._non_unit_on = non_unit_on_colour

    def embed(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        means = images.reshape(len(images), -1, 3).mean(axis=1)
        if self._fail_on is not None and any(_near(m, self._fail_on) for m in means):
            raise RuntimeError("kernel crashed on this photo")
        out = unit(means + 1e-3)
        for row, mean in enumerate(means):
            if self._non_unit_on is not None and _near(mean, self._non_unit_on):
                out[row] = np.nan
        return out


def _near(mean: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.abs(mean - np.asarray(colour)).max() < 3)


class ColourIndex:
    """Brute-force squared-L2 search over one reference per landmark colour."""

    gallery_version = "gallery-1"
    model_version = "model-a"

    def __init__(self, fail: Exception | None = None) -> None:
        self._ids = list(REFERENCE_COLOURS)
        self._vectors = unit(np.asarray([REFERENCE_COLOURS[i] for i in self._ids], np.float32))
        self.calls: list[int] = []
        self._fail = fail

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Neighbour]]:
        self.calls.append(len(embeddings))
        if self._fail is not None:
            raise self._fail
        distances = ((embeddings[:, None, :] - self._vectors[None, :, :]) ** 2).sum(axis=-1)
        results = []
        for row in distances:
            order = np.argsort(row)[:k]
            results.append(
                [
                    Neighbour(
                        f"ref-{self._ids[i]}",
                        self._ids[i],
                        self._ids[i].replace("_", " "),
                        float(min(4.0, max(0.0, row[i]))),
                    )
                    for i in order
                ]
            )
        return results


class DictFetcher:
    """Serves photos from a dict; anything else is unreachable."""

    def __init__(self, photos: dict[str, bytes]) -> None:
        self._photos = photos

    def fetch(self, uri: str) -> bytes:
        if uri not in self._photos:
            raise InputError(ReasonCode.REFERENCE_UNREACHABLE, f"no photo at {uri}")
        return self._photos[uri]

    def abort_in_flight(self) -> None:
        """Nothing is ever in flight: every fetch answers at once."""


#: Half the contrast of the fixtures' checkerboard: enough detail that the worker does not refuse
#: the photo as blank, symmetric so that the photo's mean colour stays ``colour``.
TEXTURE = 16


def photo_bytes(colour: tuple[int, int, int], size: int = 40, fmt: str = "PNG") -> bytes:
    """A photo of ``colour`` with a checkerboard texture of 5-pixel squares (mean: ``colour``)."""
    rows, columns = np.indices((size, size))
    sign = np.where((rows // 5 + columns // 5) % 2 == 0, 1, -1)[..., None]
    pixels = np.clip(np.asarray(colour) + sign * TEXTURE, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def solid_photo_bytes(colour: tuple[int, int, int], size: int = 40, fmt: str = "PNG") -> bytes:
    """A photo of one flat colour: nothing in it to recognise."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def inline_record(
    image_id: str, colour: tuple[int, int, int], offset: int = 0, trace_id: str | None = None
) -> KafkaRecord:
    return _located(
        encode_image_event(
            InlinePhoto(
                image_id=image_id,
                data=photo_bytes(colour),
                content_type="image/png",
                published_at=PUBLISHED_AT,
                trace_id=trace_id,
            )
        ),
        offset,
    )


def reference_record(image_id: str, uri: str, offset: int = 0) -> KafkaRecord:
    return _located(
        encode_image_event(PhotoReference(image_id=image_id, uri=uri, published_at=PUBLISHED_AT)),
        offset,
    )


def raw_record(key: bytes | None, value: bytes, offset: int = 0) -> KafkaRecord:
    return KafkaRecord(
        key=key,
        value=value,
        headers=(("content-type", b"image/jpeg"), ("schema-version", b"1")),
        topic="images",
        partition=0,
        offset=offset,
    )


def event_record(event: InlinePhoto | PhotoReference, offset: int = 0) -> KafkaRecord:
    """An image event as the worker reads it: images-0 at ``offset``."""
    return _located(encode_image_event(event), offset)


def _located(record: KafkaRecord, offset: int) -> KafkaRecord:
    return replace(record, topic="images", partition=0, offset=offset)
