"""``landmark-publish``: send a folder of photos (or a list of files) to the images topic.

Each photo becomes one image event keyed by its image id, inline (the bytes in the record) or as a
``file://`` reference (for photos the workers can read from a shared folder), with a
``published-at`` header so the worker can measure end-to-end latency.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from kafka import KafkaProducer
from kafka.errors import KafkaError

from schemas.image_event import InlinePhoto, PhotoReference, encode_image_event
from worker.settings import DEFAULT_BOOTSTRAP, IMAGES_TOPIC, EnvDefaultsParser, positive_int

PHOTO_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"}
)
#: Inline values above this go as references in ``auto`` mode (Kafka's default limit is 1 MB).
DEFAULT_MAX_INLINE_BYTES = 900 * 1024


@dataclass(frozen=True)
class PhotoFile:
    """A photo to publish: where it is and the id it gets."""

    path: Path
    image_id: str


def find_photos(inputs: Sequence[Path], id_scheme: str) -> list[PhotoFile]:
    """Expand folders (recursively, photo suffixes only) and files into photos with ids.

    Args:
        inputs: Files and folders; files are taken whatever their suffix.
        id_scheme: ``hash`` (sha256 of the bytes, 32 hex: stable across copies) or ``path``
            (the path relative to the given folder, or the file name).

    Raises:
        FileNotFoundError: an input does not exist.
    """
    photos: list[PhotoFile] = []
    for item in inputs:
        if item.is_dir():
            files = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
            )
            photos.extend(PhotoFile(p, _image_id(p, p.relative_to(item), id_scheme)) for p in files)
        elif item.is_file():
            photos.append(PhotoFile(item, _image_id(item, Path(item.name), id_scheme)))
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return photos


def _image_id(path: Path, relative: Path, id_scheme: str) -> str:
    if id_scheme == "hash":
        return hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    return relative.as_posix()


def _events(
    photos: Sequence[PhotoFile], mode: str, max_inline_bytes: int, source: str
) -> Iterator[tuple[PhotoFile, InlinePhoto | PhotoReference, int]]:
    for photo in photos:
        size = photo.path.stat().st_size
        inline = mode == "inline" or (mode == "auto" and size <= max_inline_bytes)
        now = datetime.now(UTC)
        if inline:
            content_type = mimetypes.guess_type(photo.path.name)[0] or "application/octet-stream"
            if not content_type.startswith("image/"):
                content_type = "application/octet-stream"
            yield (
                photo,
                InlinePhoto(
                    image_id=photo.image_id,
                    data=photo.path.read_bytes(),
                    content_type=content_type,
                    published_at=now,
                    source=source,
                ),
                size,
            )
        else:
            yield (
                photo,
                PhotoReference(
                    image_id=photo.image_id,
                    uri=photo.path.resolve().as_uri(),
                    published_at=now,
                    source=source,
                ),
                0,
            )


def publish(
    photos: Sequence[PhotoFile],
    producer: KafkaProducer,
    topic: str,
    mode: str,
    max_inline_bytes: int,
    source: str,
    progress: TextIO | None,
    id_map: TextIO | None,
    timeout_s: float,
) -> tuple[int, int]:
    """Publish every photo and wait for the broker's acknowledgements.

    Returns:
        ``(acknowledged, failed)`` counts.
    """
    futures = []
    total = len(photos)
    started = time.monotonic()
    last_report = 0.0
    for done, (photo, event, _size) in enumerate(
        _events(photos, mode, max_inline_bytes, source), 1
    ):
        record = encode_image_event(event)
        futures.append(
            producer.send(topic, key=record.key, value=record.value, headers=list(record.headers))
        )
        if id_map is not None:
            id_map.write(
                json.dumps(
                    {
                        "image_id": photo.image_id,
                        "path": str(photo.path),
                        "as": "inline" if isinstance(event, InlinePhoto) else "reference",
                    }
                )
                + "\n"
            )
        now = time.monotonic()
        if progress is not None and (now - last_report > 0.5 or done == total):
            last_report = now
            rate = done / max(now - started, 1e-9)
            end = "\n" if done == total else ""
            progress.write(f"\rsent {done}/{total} photos ({rate:.0f}/s){end}")
            progress.flush()
    producer.flush(timeout=timeout_s)
    failed = 0
    for future in futures:
        try:
            future.get(timeout=timeout_s)
        except KafkaError as error:
            failed += 1
            if progress is not None:
                progress.write(f"not acknowledged: {error!r}\n")
    return total - failed, failed


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landmark-publish",
        description="Publish photos (folders are searched recursively) to the images topic.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="photo files and/or folders")
    f = EnvDefaultsParser(parser, environ)
    f.add(
        "--bootstrap-servers",
        env="LANDMARK_KAFKA_BOOTSTRAP",
        default=DEFAULT_BOOTSTRAP,
        help="Kafka bootstrap servers",
    )
    f.add("--topic", env="LANDMARK_IMAGES_TOPIC", default=IMAGES_TOPIC, help="images topic")
    f.add(
        "--as",
        env="LANDMARK_PUBLISH_AS",
        default="auto",
        choices=("auto", "inline", "reference"),
        help="send bytes inline, file:// references, or inline unless over --max-inline-bytes",
    )
    f.add(
        "--max-inline-bytes",
        env="LANDMARK_PUBLISH_MAX_INLINE_BYTES",
        type=positive_int,
        default=DEFAULT_MAX_INLINE_BYTES,
        help="largest photo sent inline in auto mode",
    )
    f.add(
        "--id-scheme",
        env="LANDMARK_PUBLISH_ID_SCHEME",
        default="hash",
        choices=("hash", "path"),
        help="image id: content hash (stable) or path relative to the folder given",
    )
    f.add(
        "--source",
        env="LANDMARK_PUBLISH_SOURCE",
        default="landmark-publish",
        help="value of the source header",
    )
    f.add(
        "--id-map",
        env="LANDMARK_PUBLISH_ID_MAP",
        type=Path,
        default=None,
        help="write one JSON line per photo (image_id, path, as) to this file",
    )
    f.add(
        "--limit",
        env="LANDMARK_PUBLISH_LIMIT",
        type=positive_int,
        default=None,
        help="publish at most this many photos",
    )
    f.add(
        "--timeout-s",
        env="LANDMARK_PUBLISH_TIMEOUT_S",
        type=float,
        default=60.0,
        help="how long to wait for the broker's acknowledgements",
    )
    f.add_switch("--quiet", env="LANDMARK_PUBLISH_QUIET", help="no progress output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Publish and report; exit status 1 when some photo was not acknowledged."""
    args = build_parser(os.environ).parse_args(argv)
    try:
        photos = find_photos(args.paths, args.id_scheme)
    except FileNotFoundError as error:
        print(f"landmark-publish: {error}", file=sys.stderr)
        return 2
    if args.limit is not None:
        photos = photos[: args.limit]
    if not photos:
        print(
            "landmark-publish: no photos found in " + ", ".join(map(str, args.paths)),
            file=sys.stderr,
        )
        return 2
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap_servers,
        acks="all",
        linger_ms=10,
        client_id="landmark-publish",
        max_request_size=4 * 1024 * 1024,
        max_block_ms=int(args.timeout_s * 1000),
    )
    progress = None if args.quiet else sys.stderr
    started = time.monotonic()
    id_map = args.id_map.open("w", encoding="utf-8") if args.id_map is not None else None
    try:
        acknowledged, failed = publish(
            photos,
            producer,
            args.topic,
            getattr(args, "as"),
            args.max_inline_bytes,
            args.source,
            progress,
            id_map,
            args.timeout_s,
        )
    except KafkaError as error:
        print(
            f"landmark-publish: Kafka at {args.bootstrap_servers} failed: {error!r}",
            file=sys.stderr,
        )
        return 1
    finally:
        if id_map is not None:
            id_map.close()
        producer.close(timeout=10)
    seconds = time.monotonic() - started
    if progress is not None:
        progress.write(
            f"published {acknowledged} photos to {args.topic!r} in {seconds:.1f} s"
            f"{f', {failed} failed' if failed else ''}\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
