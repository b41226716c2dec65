"""Settings of ``landmark-demo``: its flags, each with an environment variable, and defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack import sample_data

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The first paragraph of :mod:`devstack.demo`'s docstring, shown by ``--help``.
DESCRIPTION = (
    "``landmark-demo``: the whole product on embedded defaults, end to end, on one machine."
)


@dataclass(frozen=True)
class DemoSettings:
    """Settings of one demo run, built once from flags and environment variables."""

    data: Path
    work_dir: Path
    sample_url: str
    sample_labels_url: str
    bootstrap: str
    milvus_port: int
    metrics_ports: tuple[int, ...]
    cap: int
    references: int
    query: float
    input_size: int
    epochs: int
    augment_views: int
    trainable_from: str
    max_photos: int
    timeout_s: float


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def build_parser() -> argparse.ArgumentParser:
    """The demo's flags, each with its environment variable shown in ``--help``."""
    parser = argparse.ArgumentParser(
        prog="landmark-demo",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(flag: str, env: str, default: str, help_text: str, **kwargs: Any) -> None:
        parser.add_argument(
            flag, default=_env(env, default), help=f"{help_text} [env: {env}]", **kwargs
        )

    add(
        "--data",
        "LANDMARK_DATA_DIR",
        str(REPO_ROOT.parent / "shared/data/landmarks"),
        "folder of landmark folders (<data>/<landmark>/<photo>)",
        type=Path,
    )
    add(
        "--work-dir",
        "LANDMARK_DEMO_DIR",
        str(REPO_ROOT / ".run/demo"),
        "where the split, model, gallery and results go",
        type=Path,
    )
    add(
        "--sample-url",
        "LANDMARK_DEMO_SAMPLE_URL",
        sample_data.DEFAULT_SAMPLE_URL,
        "archive of photos fetched when --data is missing (tar/zip of landmark folders, or "
        "Google-Landmarks images with --sample-labels-url)",
    )
    add(
        "--sample-labels-url",
        "LANDMARK_DEMO_SAMPLE_LABELS_URL",
        sample_data.DEFAULT_SAMPLE_LABELS_URL,
        "Google-Landmarks id,url,landmark_id CSV for a --sample-url archive without landmark "
        "folders ('' when the archive has landmark folders)",
    )
    add(
        "--bootstrap-servers",
        "LANDMARK_KAFKA_BOOTSTRAP",
        "127.0.0.1:19092",
        "Kafka bootstrap servers (a local broker is started on 127.0.0.1 when none answers)",
    )
    add(
        "--milvus-port",
        "LANDMARK_DEMO_MILVUS_PORT",
        "19531",
        "port of the Milvus Lite server the demo starts",
        type=int,
    )
    add(
        "--metrics-ports",
        "LANDMARK_DEMO_METRICS_PORTS",
        "9108,9109",
        "metrics/health ports of the two workers (Prometheus scrapes 9108-9117)",
    )
    add("--cap", "LANDMARK_DEMO_CAP", "24", "at most this many photos a landmark", type=int)
    add(
        "--references",
        "LANDMARK_DEMO_REFERENCES",
        "8",
        "reference photos a landmark in the gallery",
        type=int,
    )
    add(
        "--query",
        "LANDMARK_DEMO_QUERY",
        "0.2",
        "share of each landmark's photos held out and published",
        type=float,
    )
    add("--input-size", "LANDMARK_DEMO_INPUT_SIZE", "160", "model input side in pixels", type=int)
    add("--epochs", "LANDMARK_DEMO_EPOCHS", "3", "fine-tuning epochs", type=int)
    add(
        "--augment-views",
        "LANDMARK_DEMO_AUGMENT_VIEWS",
        "2",
        "augmented views cached a training photo",
        type=int,
    )
    add(
        "--trainable-from",
        "LANDMARK_DEMO_TRAINABLE_FROM",
        "block_16",
        "first trainable stage of the backbone",
    )
    add(
        "--max-photos",
        "LANDMARK_DEMO_MAX_PHOTOS",
        "400",
        "publish at most this many held-out photos",
        type=int,
    )
    add(
        "--timeout",
        "LANDMARK_DEMO_TIMEOUT",
        "300",
        "seconds to wait for the tag events",
        type=float,
    )
    return parser


def settings_from(argv: Sequence[str] | None) -> DemoSettings:
    args = build_parser().parse_args(argv)
    ports = tuple(int(p) for p in str(args.metrics_ports).split(",") if p.strip())
    if len(ports) < 2:
        raise SystemExit("error: --metrics-ports needs two ports, one a worker")
    return DemoSettings(
        data=Path(args.data),
        work_dir=Path(args.work_dir),
        sample_url=args.sample_url,
        sample_labels_url=args.sample_labels_url,
        bootstrap=args.bootstrap_servers,
        milvus_port=args.milvus_port,
        metrics_ports=ports[:2],
        cap=args.cap,
        references=args.references,
        query=args.query,
        input_size=args.input_size,
        epochs=args.epochs,
        augment_views=args.augment_views,
        trainable_from=args.trainable_from,
        max_photos=args.max_photos,
        timeout_s=args.timeout,
    )
