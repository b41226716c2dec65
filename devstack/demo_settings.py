"""Settings of the demo (``python -m devstack.demo``): its flags, each with a variable, and defaults."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

from configuration import load_settings, setting
from configuration.base import split_commas
from configuration.kafka import KafkaConnection
from devstack import sample_data
from devstack.processes import REPO_ROOT

#: The first paragraph of :mod:`devstack.demo`'s docstring, shown by ``--help``.
DESCRIPTION = "The whole product on embedded defaults, end to end, on one machine."

#: Two or more ports, comma-separated.
PortList = Annotated[
    tuple[Annotated[int, Field(ge=1, le=65535)], ...],
    NoDecode,
    BeforeValidator(split_commas),
    Field(min_length=2),
]


class DemoSettings(KafkaConnection):
    """Settings of one demo run, built once from flags and environment variables."""

    group_title: ClassVar[str] = "demo"

    data: Path = setting(
        REPO_ROOT.parent / "shared/data/landmarks",
        env="LANDMARK_DATA_DIR",
        help="folder of landmark folders (<data>/<landmark>/<photo>)",
    )
    work_dir: Path = setting(
        REPO_ROOT / ".run/demo",
        env="LANDMARK_DEMO_DIR",
        help="where the split, model, gallery and results go",
    )
    sample_url: str = setting(
        sample_data.DEFAULT_SAMPLE_URL,
        env="LANDMARK_DEMO_SAMPLE_URL",
        help="archive of photos fetched when --data is missing (tar/zip of landmark folders, "
        "or Google-Landmarks images with --sample-labels-url)",
    )
    sample_labels_url: str = setting(
        sample_data.DEFAULT_SAMPLE_LABELS_URL,
        env="LANDMARK_DEMO_SAMPLE_LABELS_URL",
        help="Google-Landmarks id,url,landmark_id CSV for a --sample-url archive without "
        "landmark folders ('' when the archive has landmark folders)",
    )
    milvus_port: int = setting(
        19531,
        ge=1,
        le=65535,
        env="LANDMARK_DEMO_MILVUS_PORT",
        help="port of the Milvus Lite server the demo starts",
    )
    metrics_ports: PortList = setting(
        (9108, 9109),
        env="LANDMARK_DEMO_METRICS_PORTS",
        help="metrics/health ports of the two workers (Prometheus scrapes 9108-9117)",
    )
    cap: int = setting(
        24, ge=1, env="LANDMARK_DEMO_CAP", help="at most this many photos a landmark"
    )
    references: int = setting(
        8, ge=1, env="LANDMARK_DEMO_REFERENCES", help="reference photos a landmark in the gallery"
    )
    query: float = setting(
        0.2,
        gt=0,
        lt=1,
        env="LANDMARK_DEMO_QUERY",
        help="share of each landmark's photos held out and published",
    )
    input_size: int = setting(
        160, ge=32, env="LANDMARK_DEMO_INPUT_SIZE", help="model input side in pixels"
    )
    epochs: int = setting(3, ge=1, env="LANDMARK_DEMO_EPOCHS", help="fine-tuning epochs")
    augment_views: int = setting(
        2, ge=0, env="LANDMARK_DEMO_AUGMENT_VIEWS", help="augmented views cached a training photo"
    )
    trainable_from: str = setting(
        "block_16",
        env="LANDMARK_DEMO_TRAINABLE_FROM",
        help="first trainable stage of the backbone",
    )
    max_photos: int = setting(
        400, ge=1, env="LANDMARK_DEMO_MAX_PHOTOS", help="publish at most this many held-out photos"
    )
    timeout_s: float = setting(
        300.0,
        gt=0,
        flag="--timeout",
        env="LANDMARK_DEMO_TIMEOUT",
        help="seconds to wait for the tag events",
    )


def settings_from(argv: Sequence[str] | None) -> DemoSettings:
    """The demo's settings from the command line and the environment."""
    return load_settings(
        DemoSettings, argv, prog="python -m devstack.demo", description=DESCRIPTION
    )
