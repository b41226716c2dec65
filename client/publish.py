"""``landmark-publish``: send a folder of photos (or a list of files) to the images topic.

Each photo becomes one image event keyed by its image id, inline (the bytes in the record) or as a
``file://`` reference (for photos the workers can read from a shared folder), with a
``published-at`` header so the worker can measure end-to-end latency.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal, TextIO

from kafka import KafkaProducer
from kafka.errors import KafkaError

from client.photo_files import PhotoFile, find_photos
from configuration import load_settings, setting
from configuration.kafka import (
    IMAGES_TOPIC,
    KafkaConnection,
    KafkaUnreachable,
    cannot_connect,
    check_connection,
    describe_connection_failure,
)
from schemas.image_event import InlinePhoto, PhotoReference, encode_image_event
from schemas.preprocessing import PreprocessingSpec

#: Inline values above this go as references in ``auto`` mode (Kafka's default limit is 1 MB).
DEFAULT_MAX_INLINE_BYTES = 900 * 1024
#: The largest photo a worker decodes (``PreprocessingSpec.max_encoded_bytes``, 32 MiB): a larger
#: one would only be dead-lettered, so it is not sent.
MAX_PHOTO_BYTES = PreprocessingSpec().max_encoded_bytes
#: The producer's request limit: the largest photo plus room for its key, headers and framing.
#: The broker has its own limit (``message.max.bytes``: 40 MiB for ``deploy/local/kafka.sh``).
MAX_REQUEST_BYTES = MAX_PHOTO_BYTES + 1024 * 1024


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
    refused = 0
    total = len(photos)
    started = time.monotonic()
    last_report = 0.0
    for done, (photo, event, size) in enumerate(_events(photos, mode, max_inline_bytes, source), 1):
        if size > MAX_PHOTO_BYTES:
            refused += 1
            if progress is not None:
                progress.write(
                    f"not sent: {photo.path} is {size} bytes, over the {MAX_PHOTO_BYTES} "
                    "bytes a worker accepts\n"
                )
            continue
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
    failed = refused
    for future in futures:
        try:
            future.get(timeout=timeout_s)
        except KafkaError as error:
            failed += 1
            if progress is not None:
                progress.write(f"not acknowledged: {error!r}\n")
    return total - failed, failed


class PublishSettings(KafkaConnection):
    """``landmark-publish``'s settings."""

    group_title: ClassVar[str] = "publish"

    paths: tuple[Path, ...] = setting(positional=True, nargs="+", help="photo files and/or folders")
    topic: str = setting(IMAGES_TOPIC, env="LANDMARK_IMAGES_TOPIC", help="images topic")
    publish_as: Literal["auto", "inline", "reference"] = setting(
        "auto",
        flag="--as",
        env="LANDMARK_PUBLISH_AS",
        help="send bytes inline, file:// references, or inline unless over --max-inline-bytes",
    )
    max_inline_bytes: int = setting(
        DEFAULT_MAX_INLINE_BYTES,
        ge=1,
        env="LANDMARK_PUBLISH_MAX_INLINE_BYTES",
        help="largest photo sent inline in auto mode",
    )
    id_scheme: Literal["hash", "path"] = setting(
        "hash",
        env="LANDMARK_PUBLISH_ID_SCHEME",
        help="image id: content hash (stable) or path relative to the folder given",
    )
    source: str = setting(
        "landmark-publish", env="LANDMARK_PUBLISH_SOURCE", help="value of the source header"
    )
    id_map: Path | None = setting(
        None,
        env="LANDMARK_PUBLISH_ID_MAP",
        help="write one JSON line per photo (image_id, path, as) to this file",
    )
    limit: int | None = setting(
        None, ge=1, env="LANDMARK_PUBLISH_LIMIT", help="publish at most this many photos"
    )
    timeout_s: float = setting(
        60.0,
        gt=0,
        env="LANDMARK_PUBLISH_TIMEOUT_S",
        help="how long to wait for the broker's acknowledgements",
    )
    quiet: bool = setting(False, env="LANDMARK_PUBLISH_QUIET", help="no progress output")


def parse_settings(argv: Sequence[str] | None = None) -> PublishSettings:
    """``landmark-publish``'s settings from the command line and the environment."""
    return load_settings(
        PublishSettings,
        argv,
        prog="landmark-publish",
        description="Publish photos (folders are searched recursively) to the images topic.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Publish and report; exit status 1 when some photo was not acknowledged."""
    settings = parse_settings(argv)
    try:
        photos = find_photos(settings.paths, settings.id_scheme)
    except FileNotFoundError as error:
        print(f"landmark-publish: {error}", file=sys.stderr)
        return 2
    if settings.limit is not None:
        photos = photos[: settings.limit]
    if not photos:
        print(
            "landmark-publish: no photos found in " + ", ".join(map(str, settings.paths)),
            file=sys.stderr,
        )
        return 2
    try:
        options = settings.kafka_client_options()
        check_connection(options, timeout_s=min(settings.timeout_s, 10.0))
        producer = KafkaProducer(
            **options,
            acks="all",
            linger_ms=10,
            client_id="landmark-publish",
            max_request_size=MAX_REQUEST_BYTES,
            max_block_ms=int(settings.timeout_s * 1000),
        )
    except (KafkaError, KafkaUnreachable, OSError) as error:
        print(
            cannot_connect("landmark-publish", settings.bootstrap_servers, error), file=sys.stderr
        )
        return 1
    progress = None if settings.quiet else sys.stderr
    started = time.monotonic()
    id_map = settings.id_map.open("w", encoding="utf-8") if settings.id_map is not None else None
    try:
        acknowledged, failed = publish(
            photos,
            producer,
            settings.topic,
            settings.publish_as,
            settings.max_inline_bytes,
            settings.source,
            progress,
            id_map,
            settings.timeout_s,
        )
    except KafkaError as error:
        print(
            f"landmark-publish: Kafka at {settings.bootstrap_servers} failed: "
            f"{describe_connection_failure(error)}",
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
            f"published {acknowledged} photos to {settings.topic!r} in {seconds:.1f} s"
            f"{f', {failed} failed' if failed else ''}\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
