"""``landmark-load-gallery``: embed reference photos with an export and make them the gallery.

Examples::

    landmark-load-gallery --model-dir exports/current                      # ./milvus.db
    landmark-load-gallery --model-dir exports/current --gallery-version 2026-11 \\
        --milvus-uri http://milvus:19530 --index-type HNSW --drop-previous
    LANDMARK_MILVUS_TOKEN=root:Milvus landmark-load-gallery --csv train.csv --images-root imgs ...

Every flag has an environment variable, shown in ``--help``; a flag wins over its variable.
The token is read but never printed or logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas.gallery import DEFAULT_ALIAS, INDEX_TYPES

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "landmarks"

logger = logging.getLogger("trainer.cli.gallery")


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def redact_uri(uri: str) -> str:
    """The URI without a ``user:password@`` part, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def build_parser() -> argparse.ArgumentParser:
    """The command's flags, each with its ``LANDMARK_…`` environment variable."""
    parser = argparse.ArgumentParser(
        prog="landmark-load-gallery",
        description="Embed reference photos (a folder of landmark folders, or a "
        "Google-Landmarks CSV) with an exported model, load them into a new Milvus collection "
        "named for the model and gallery version, index and verify it, then move the alias "
        "workers search to it in one step. Re-running adds no duplicates; an interrupted "
        "load resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(flag: str, env: str, default: Any, help_text: str, **kwargs: Any) -> None:
        parser.add_argument(
            flag, default=os.environ.get(env, default), help=f"{help_text} [env: {env}]", **kwargs
        )

    add("--model-dir", "LANDMARK_MODEL_DIR", None, "export folder (model.keras + manifest.json)")
    add("--data", "LANDMARK_DATA_DIR", str(DEFAULT_DATA_DIR), "folder of landmark folders")
    add(
        "--csv",
        "LANDMARK_GALLERY_CSV",
        None,
        "Google-Landmarks CSV (id,url,landmark_id) instead of --data",
    )
    add(
        "--images-root",
        "LANDMARK_GALLERY_IMAGES_ROOT",
        None,
        "folder the CSV's photos were downloaded into",
    )
    add("--names-csv", "LANDMARK_GALLERY_NAMES_CSV", None, "CSV of landmark names for --csv")
    add("--cap", "LANDMARK_GALLERY_CAP", None, "at most this many photos a landmark", type=int)
    add("--milvus-uri", "LANDMARK_MILVUS_URI", "milvus.db", "Milvus URI or Milvus Lite file")
    # The token's value must not appear in --help, so its variable is read after parsing.
    parser.add_argument(
        "--milvus-token",
        default=None,
        help="Milvus token, user:password or API key; never printed or logged "
        "[env: LANDMARK_MILVUS_TOKEN]",
    )
    add("--alias", "LANDMARK_GALLERY_ALIAS", DEFAULT_ALIAS, "alias the workers search")
    add(
        "--gallery-version",
        "LANDMARK_GALLERY_VERSION",
        None,
        "gallery version (default: a hash of the reference ids, so the same photos give the "
        "same version)",
    )
    add("--index-type", "LANDMARK_GALLERY_INDEX", "FLAT", "vector index", choices=INDEX_TYPES)
    add(
        "--keep-previous",
        "LANDMARK_GALLERY_KEEP_PREVIOUS",
        "true",
        "keep the collection the alias pointed to before (false: drop it)",
        type=_flag,
    )
    parser.add_argument(
        "--drop-previous",
        dest="keep_previous",
        action="store_false",
        help="same as --keep-previous false",
    )
    add("--embed-batch-size", "LANDMARK_GALLERY_EMBED_BATCH", 32, "photos per model call", type=int)
    add(
        "--insert-batch-size",
        "LANDMARK_GALLERY_INSERT_BATCH",
        2000,
        "rows per Milvus insert",
        type=int,
    )
    add(
        "--decode-workers", "LANDMARK_GALLERY_DECODE_WORKERS", 2, "photo-decoding threads", type=int
    )
    add("--timeout", "LANDMARK_MILVUS_TIMEOUT", 120.0, "seconds per Milvus call", type=float)
    add(
        "--index-timeout",
        "LANDMARK_GALLERY_INDEX_TIMEOUT",
        3600.0,
        "seconds for building the index, flushing and loading",
        type=float,
    )
    add("--log-level", "LANDMARK_LOG_LEVEL", "info", "log level")
    return parser


def _read_photos(args: argparse.Namespace) -> list[Any]:
    from trainer.data.photos import (
        cap_per_landmark,
        read_google_landmarks_csv,
        read_landmark_folders,
    )

    if args.csv:
        if not args.images_root:
            raise ValueError("--csv needs --images-root (LANDMARK_GALLERY_IMAGES_ROOT)")
        listing = read_google_landmarks_csv(args.csv, args.images_root, args.names_csv)
        for missing in listing.missing:
            logger.warning(
                "CSV row %d (%s) skipped: %s", missing.row_number, missing.image_id, missing.reason
            )
        photos = listing.photos
    else:
        photos = read_landmark_folders(args.data)
    if args.cap is not None:
        photos = cap_per_landmark(photos, args.cap, seed=0)
    return photos


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the process exit status (0 ok, 1 load failed, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pymilvus probes the in-process Milvus Lite server for a call it does not implement
    # (AllocTimestamp) and copes; the server's traceback for it would only alarm the reader.
    logging.getLogger("grpc._server").addFilter(
        lambda record: "Method not implemented" not in record.getMessage()
    )
    if not args.model_dir:
        print("error: --model-dir (or LANDMARK_MODEL_DIR) is required", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from trainer.gallery.collection import GalleryLoadError
    from trainer.gallery.loader import GalleryLoadSettings, connect, load_gallery
    from trainer.model.export import load_export

    try:
        settings = GalleryLoadSettings(
            uri=args.milvus_uri,
            token=args.milvus_token or os.environ.get("LANDMARK_MILVUS_TOKEN", ""),
            alias=args.alias,
            gallery_version=args.gallery_version,
            index_type=args.index_type,
            keep_previous=args.keep_previous,
            embed_batch_size=args.embed_batch_size,
            insert_batch_size=args.insert_batch_size,
            decode_workers=args.decode_workers,
            timeout_s=args.timeout,
            index_timeout_s=args.index_timeout,
        )
        photos = _read_photos(args)
        model, manifest = load_export(Path(args.model_dir))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logger.info(
        "loading %d photos with model %s into %s (alias %s)",
        len(photos),
        manifest.model_version,
        redact_uri(settings.uri),
        settings.alias,
    )
    client = connect(settings)
    try:
        report = load_gallery(client, model, manifest, photos, settings)
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
