"""The worker's settings: one frozen dataclass, built once in the CLI from flags and env vars.

Every flag has an environment variable ``LANDMARK_…`` shown in ``--help``; a flag given on the
command line wins over its variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
IMAGES_TOPIC = "images"
TAGS_TOPIC = "landmark-tags"
DEAD_LETTER_TOPIC = "images.dlq"
DEFAULT_GROUP = "landmark-workers"
REPO_ROOT = Path(__file__).resolve().parent.parent


def default_worker_id() -> str:
    """``<hostname>-<pid>``: unique among the workers of a group, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the worker loop needs to know, passed explicitly into its constructors."""

    model_dir: Path
    milvus_uri: str
    # Never logged or shown: repr=False keeps it out of the settings' repr.
    milvus_token: str = field(default="", repr=False)
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    images_topic: str = IMAGES_TOPIC
    tags_topic: str = TAGS_TOPIC
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    group_id: str = DEFAULT_GROUP
    worker_id: str = field(default_factory=default_worker_id)
    gallery_alias: str = "landmarks"
    batch_max_records: int = 32
    batch_max_wait_ms: int = 200
    decode_threads: int = 2
    vote_k: int | None = None
    vote_weighting: str | None = None
    vote_threshold: float | None = None
    reference_root: Path | None = None
    reference_hosts: frozenset[str] = frozenset()
    reference_max_bytes: int = 32 * 1024 * 1024
    reference_timeout_s: float = 5.0
    dead_letter_max_inline_bytes: int = 512 * 1024
    http_host: str = "127.0.0.1"
    http_port: int = 9108
    publish_timeout_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    reload_check_interval_s: float = 5.0
    lag_interval_s: float = 5.0
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int = 10_000
    auto_offset_reset: str = "earliest"
    log_format: str = "auto"
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.batch_max_records < 1:
            raise ValueError(f"batch_max_records must be at least 1, got {self.batch_max_records}")
        if self.batch_max_wait_ms < 0:
            raise ValueError(f"batch_max_wait_ms must be ≥ 0, got {self.batch_max_wait_ms}")
        if self.decode_threads < 1:
            raise ValueError(f"decode_threads must be at least 1, got {self.decode_threads}")
        if self.log_format not in ("auto", "json", "console"):
            raise ValueError(f"log_format must be auto, json or console, got {self.log_format!r}")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(
                f"auto_offset_reset must be earliest or latest, got {self.auto_offset_reset!r}"
            )
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"http_port out of range: {self.http_port}")


class EnvDefaultsParser:
    """Adds flags whose defaults come from ``LANDMARK_…`` variables, named in ``--help``.

    Args:
        parser: the argparse parser to add flags to.
        environ: the environment to read (``os.environ`` in the CLIs, a dict in tests).
    """

    def __init__(self, parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
        self.parser = parser
        self._environ = environ

    def add(
        self,
        flag: str,
        *,
        env: str,
        help: str,
        default: Any = None,
        type: Callable[[str], Any] = str,
        required: bool = False,
        choices: tuple[str, ...] | None = None,
    ) -> None:
        """Add ``flag``; its default is ``$env`` when set, else ``default``."""
        raw = self._environ.get(env)
        value = default
        if raw is not None and raw != "":
            try:
                value = type(raw)
            except (TypeError, ValueError) as error:
                self.parser.error(f"{env}={raw!r}: {error}")
        shown = "required" if required and value is None else f"default: {value}"
        self.parser.add_argument(
            flag,
            type=type,
            default=value,
            required=required and value is None,
            choices=choices,
            help=f"{help} [env: {env}] ({shown})",
        )

    def add_switch(self, flag: str, *, env: str, help: str) -> None:
        """Add a boolean ``flag``; ``$env`` set to 1/true/yes turns it on."""
        on = self._environ.get(env, "").strip().lower() in ("1", "true", "yes", "on")
        self.parser.add_argument(flag, action="store_true", default=on, help=f"{help} [env: {env}]")


def host_set(text: str) -> frozenset[str]:
    """Parse a comma-separated host list (``a.example,b.example:8080``)."""
    return frozenset(part.strip().lower() for part in text.split(",") if part.strip())


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a float ≥ 0."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a float > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The ``landmark-worker`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="landmark-worker",
        description=(
            "Consume photos from Kafka, embed them in batches, vote over the nearest reference "
            "photos in Milvus, publish landmark-tag events (bad input to the dead-letter topic)."
        ),
    )
    f = EnvDefaultsParser(parser, environ)
    f.add(
        "--model-dir",
        env="LANDMARK_MODEL_DIR",
        type=Path,
        required=True,
        help="exported model directory (model.keras + manifest.json); watched for new exports",
    )
    f.add(
        "--milvus-uri",
        env="LANDMARK_MILVUS_URI",
        required=True,
        help="Milvus URI: a Milvus Lite .db file path or http://host:19530",
    )
    f.add(
        "--milvus-token",
        env="LANDMARK_MILVUS_TOKEN",
        default="",
        help="Milvus token (user:password or API key); never logged",
    )
    f.add(
        "--gallery-alias",
        env="LANDMARK_GALLERY_ALIAS",
        default="landmarks",
        help="Milvus collection alias of the reference gallery",
    )
    f.add(
        "--bootstrap-servers",
        env="LANDMARK_KAFKA_BOOTSTRAP",
        default=DEFAULT_BOOTSTRAP,
        help="Kafka bootstrap servers",
    )
    f.add("--images-topic", env="LANDMARK_IMAGES_TOPIC", default=IMAGES_TOPIC, help="input topic")
    f.add("--tags-topic", env="LANDMARK_TAGS_TOPIC", default=TAGS_TOPIC, help="tag event topic")
    f.add(
        "--dead-letter-topic",
        env="LANDMARK_DLQ_TOPIC",
        default=DEAD_LETTER_TOPIC,
        help="dead-letter topic for bad input",
    )
    f.add("--group-id", env="LANDMARK_GROUP_ID", default=DEFAULT_GROUP, help="consumer group")
    f.add(
        "--worker-id",
        env="LANDMARK_WORKER_ID",
        default=None,
        help="worker id in tag events and logs (default: hostname-pid)",
    )
    f.add(
        "--batch-max-records",
        env="LANDMARK_BATCH_MAX_RECORDS",
        type=positive_int,
        default=32,
        help="most photos in one batch",
    )
    f.add(
        "--batch-max-wait-ms",
        env="LANDMARK_BATCH_MAX_WAIT_MS",
        type=int,
        default=200,
        help="longest wait for a batch to fill, in ms",
    )
    f.add(
        "--decode-threads",
        env="LANDMARK_DECODE_THREADS",
        type=positive_int,
        default=max(1, min(8, os.cpu_count() or 1)),
        help="threads decoding photos",
    )
    f.add(
        "--vote-k",
        env="LANDMARK_VOTE_K",
        type=positive_int,
        default=None,
        help="neighbours in the vote (default: the model manifest's)",
    )
    f.add(
        "--vote-weighting",
        env="LANDMARK_VOTE_WEIGHTING",
        default=None,
        choices=("uniform", "inverse_rank", "similarity"),
        help="vote weighting (default: the model manifest's)",
    )
    f.add(
        "--vote-threshold",
        env="LANDMARK_VOTE_THRESHOLD",
        type=float,
        default=None,
        help="confidence below which the answer is 'no landmark' (default: the manifest's)",
    )
    f.add(
        "--reference-root",
        env="LANDMARK_REFERENCE_ROOT",
        type=Path,
        default=None,
        help="directory file:// references must lie under (unset: file:// refused)",
    )
    f.add(
        "--reference-hosts",
        env="LANDMARK_REFERENCE_HOSTS",
        type=host_set,
        default=frozenset(),
        help="comma-separated hosts http(s):// references may name",
    )
    f.add(
        "--reference-max-bytes",
        env="LANDMARK_REFERENCE_MAX_BYTES",
        type=positive_int,
        default=32 * 1024 * 1024,
        help="largest referenced photo, in bytes",
    )
    f.add(
        "--reference-timeout-s",
        env="LANDMARK_REFERENCE_TIMEOUT_S",
        type=non_negative_float,
        default=5.0,
        help="timeout fetching an http(s) reference, in seconds",
    )
    f.add(
        "--http-host",
        env="LANDMARK_HTTP_HOST",
        default="127.0.0.1",
        help="address of the /metrics, /healthz, /readyz endpoint",
    )
    f.add(
        "--http-port",
        env="LANDMARK_HTTP_PORT",
        type=int,
        default=9108,
        help="port of the /metrics, /healthz, /readyz endpoint (0: any free port)",
    )
    f.add(
        "--reload-check-interval-s",
        env="LANDMARK_RELOAD_CHECK_INTERVAL_S",
        type=non_negative_float,
        default=5.0,
        help="how often to look for a new model export or gallery between batches",
    )
    f.add(
        "--backoff-max-s",
        env="LANDMARK_BACKOFF_MAX_S",
        type=non_negative_float,
        default=30.0,
        help="longest wait between retries while Kafka or Milvus is down",
    )
    f.add(
        "--publish-timeout-s",
        env="LANDMARK_PUBLISH_TIMEOUT_S",
        type=positive_float,
        default=30.0,
        help="how long a batch's outputs may wait for the broker's "
        "acknowledgement before the batch is retried, in seconds",
    )
    f.add(
        "--session-timeout-ms",
        env="LANDMARK_SESSION_TIMEOUT_MS",
        type=positive_int,
        default=10_000,
        help="how long the group waits for a silent worker's heartbeat "
        "before moving its partitions, in ms",
    )
    f.add(
        "--auto-offset-reset",
        env="LANDMARK_AUTO_OFFSET_RESET",
        default="earliest",
        choices=("earliest", "latest"),
        help="where a new group starts reading",
    )
    f.add(
        "--log-format",
        env="LANDMARK_LOG_FORMAT",
        default="auto",
        choices=("auto", "json", "console"),
        help="log format (auto: console when stderr is a terminal, else JSON)",
    )
    f.add(
        "--log-level",
        env="LANDMARK_LOG_LEVEL",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    """Build the frozen settings from parsed ``landmark-worker`` arguments."""
    return WorkerSettings(
        model_dir=args.model_dir,
        milvus_uri=args.milvus_uri,
        milvus_token=args.milvus_token,
        gallery_alias=args.gallery_alias,
        bootstrap_servers=args.bootstrap_servers,
        images_topic=args.images_topic,
        tags_topic=args.tags_topic,
        dead_letter_topic=args.dead_letter_topic,
        group_id=args.group_id,
        worker_id=args.worker_id or default_worker_id(),
        batch_max_records=args.batch_max_records,
        batch_max_wait_ms=args.batch_max_wait_ms,
        decode_threads=args.decode_threads,
        vote_k=args.vote_k,
        vote_weighting=args.vote_weighting,
        vote_threshold=args.vote_threshold,
        reference_root=args.reference_root,
        reference_hosts=args.reference_hosts,
        reference_max_bytes=args.reference_max_bytes,
        reference_timeout_s=args.reference_timeout_s,
        http_host=args.http_host,
        http_port=args.http_port,
        reload_check_interval_s=args.reload_check_interval_s,
        backoff_max_s=args.backoff_max_s,
        publish_timeout_s=args.publish_timeout_s,
        session_timeout_ms=args.session_timeout_ms,
        auto_offset_reset=args.auto_offset_reset,
        log_format=args.log_format,
        log_level=args.log_level,
    )
