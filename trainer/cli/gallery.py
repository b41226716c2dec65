"""``landmark-load-gallery``: embed reference photos with an export and make them the gallery.

Examples::

    landmark-load-gallery --model-dir exports/current                      # ./milvus.db
    landmark-load-gallery --model-dir exports/current --gallery-version 2026-11 \\
        --milvus-uri http://milvus:19530 --index-type HNSW --drop-previous
    LANDMARK_MILVUS_TOKEN=root:Milvus landmark-load-gallery --csv train.csv --images-root imgs ...

Every flag has an environment variable, shown in ``--help``; a flag wins over its variable.
The token (``--milvus-token``, ``LANDMARK_MILVUS_TOKEN`` or a file named by
``LANDMARK_MILVUS_TOKEN_FILE``) is read but never printed or logged.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from configuration import load_settings, setting
from configuration.log_settings import LogLevel
from configuration.milvus import MilvusConnection
from schemas.gallery import DEFAULT_ALIAS, DEFAULT_METRIC, IndexType, Metric
from trainer.cli.settings import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    from trainer.data.photos import Photo

DESCRIPTION = (
    "Embed reference photos (a folder of landmark folders, or a Google-Landmarks CSV) with an "
    "exported model, load them into a new Milvus collection named for the model and gallery "
    "version, index and verify it, then move the alias workers search to it in one step. "
    "Re-running adds no duplicates; an interrupted load resumes."
)

logger = logging.getLogger("trainer.cli.gallery")


class GalleryLoaderSettings(MilvusConnection, LogLevel):
    """What ``landmark-load-gallery`` loads, and into which Milvus.

    The Milvus connection is the worker's group (:class:`configuration.milvus.MilvusConnection`),
    with the loader's own default URI (a Milvus Lite file) and its older ``--alias`` flag.
    """

    group_title: ClassVar[str] = "gallery"

    milvus_uri: str = setting(
        "milvus.db", help="Milvus URI: a Milvus Lite .db file path or http://host:19530"
    )
    gallery_alias: str = setting(
        DEFAULT_ALIAS,
        aliases=("--alias",),
        help="Milvus collection alias of the reference gallery, the one workers search",
    )
    model_dir: Path = setting(
        env="LANDMARK_MODEL_DIR", help="export folder (model.keras + manifest.json)"
    )
    data: Path = setting(
        DEFAULT_DATA_DIR, env="LANDMARK_DATA_DIR", help="folder of landmark folders"
    )
    csv: Path | None = setting(
        None,
        env="LANDMARK_GALLERY_CSV",
        help="Google-Landmarks CSV (id,url,landmark_id) instead of --data",
    )
    images_root: Path | None = setting(
        None,
        env="LANDMARK_GALLERY_IMAGES_ROOT",
        help="folder the CSV's photos were downloaded into",
    )
    names_csv: Path | None = setting(
        None, env="LANDMARK_GALLERY_NAMES_CSV", help="CSV of landmark names for --csv"
    )
    cap: int | None = setting(
        None, ge=1, env="LANDMARK_GALLERY_CAP", help="at most this many photos a landmark"
    )
    gallery_version: str | None = setting(
        None,
        env="LANDMARK_GALLERY_VERSION",
        help="gallery version (default: a hash of the reference ids, so the same photos give "
        "the same version)",
    )
    index_type: IndexType = setting("FLAT", env="LANDMARK_GALLERY_INDEX", help="vector index")
    metric: Metric = setting(
        DEFAULT_METRIC,
        env="LANDMARK_GALLERY_METRIC",
        help="vector metric: IP (unit embeddings: ranks as COSINE, half the search CPU of the "
        "Milvus server), COSINE or L2",
    )
    keep_previous: bool = setting(
        True,
        off_flag="--drop-previous",
        env="LANDMARK_GALLERY_KEEP_PREVIOUS",
        help="keep the collection the alias pointed to before (--no-keep-previous: drop it)",
    )
    embed_batch_size: int = setting(
        32, ge=1, env="LANDMARK_GALLERY_EMBED_BATCH", help="photos per model call"
    )
    insert_batch_size: int = setting(
        2000, ge=1, env="LANDMARK_GALLERY_INSERT_BATCH", help="rows per Milvus insert"
    )
    decode_workers: int = setting(
        2, ge=1, env="LANDMARK_GALLERY_DECODE_WORKERS", help="photo-decoding threads"
    )
    timeout: float = setting(
        120.0, gt=0, env="LANDMARK_MILVUS_TIMEOUT", help="seconds per Milvus call"
    )
    index_timeout: float = setting(
        3600.0,
        gt=0,
        env="LANDMARK_GALLERY_INDEX_TIMEOUT",
        help="seconds for building the index, flushing and loading",
    )


def redact_uri(uri: str) -> str:
    """The URI without a ``user:password@`` part, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _read_photos(settings: GalleryLoaderSettings) -> list[Photo]:
    from trainer.data.photos import (
        cap_per_landmark,
        read_google_landmarks_csv,
        read_landmark_folders,
    )

    if settings.csv:
        if not settings.images_root:
            raise ValueError("--csv needs --images-root (LANDMARK_GALLERY_IMAGES_ROOT)")
        listing = read_google_landmarks_csv(settings.csv, settings.images_root, settings.names_csv)
        for missing in listing.missing:
            logger.warning(
                "CSV row %d (%s) skipped: %s", missing.row_number, missing.image_id, missing.reason
            )
        photos = listing.photos
    else:
        photos = read_landmark_folders(settings.data)
    if settings.cap is not None:
        photos = cap_per_landmark(photos, settings.cap, seed=0)
    return photos


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the process exit status (0 ok, 1 load failed, 2 bad usage)."""
    settings = load_settings(
        GalleryLoaderSettings, argv, prog="landmark-load-gallery", description=DESCRIPTION
    )
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pymilvus probes the in-process Milvus Lite server for a call it does not implement
    # (AllocTimestamp) and copes; the server's traceback for it would only alarm the reader.
    logging.getLogger("grpc._server").addFilter(
        lambda record: "Method not implemented" not in record.getMessage()
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from trainer.gallery.collection import GalleryLoadError
    from trainer.gallery.loader import GalleryLoadSettings, connect, load_gallery
    from trainer.model.export import load_export

    try:
        load = GalleryLoadSettings(
            uri=settings.milvus_uri,
            token=settings.milvus_token,
            alias=settings.gallery_alias,
            gallery_version=settings.gallery_version,
            index_type=settings.index_type,
            metric=settings.metric,
            keep_previous=settings.keep_previous,
            embed_batch_size=settings.embed_batch_size,
            insert_batch_size=settings.insert_batch_size,
            decode_workers=settings.decode_workers,
            timeout_s=settings.timeout,
            index_timeout_s=settings.index_timeout,
        )
        photos = _read_photos(settings)
        model, manifest = load_export(settings.model_dir)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logger.info(
        "loading %d photos with model %s into %s (alias %s)",
        len(photos),
        manifest.model_version,
        redact_uri(load.uri),
        load.alias,
    )
    client = connect(load)
    try:
        report = load_gallery(client, model, manifest, photos, load)
    except GalleryLoadError as error:
        logger.error("gallery load failed: %s", error)
        return 1
    finally:
        client.close()
    for bad in report.bad_photos:
        logger.warning("bad photo %s: %s (%s)", bad.path, bad.message, bad.reason)
    print(
        f"alias {report.alias} -> {report.collection}: {report.row_count} references "
        f"(gallery {report.gallery_version}, model {report.model_version}); "
        f"inserted {report.inserted}, already present {report.already_present}, "
        f"duplicates {report.duplicates}, bad photos {len(report.bad_photos)}; "
        f"{report.rows_per_s:.1f} rows/s embedded+inserted; previous "
        f"{report.previous_collection or 'none'}"
        f"{' (dropped)' if report.previous_dropped else ''}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
