"""The worker's settings: one frozen settings class, built once in the CLI from flags and env vars.

Every field is a flag of ``landmark-worker`` with a ``LANDMARK_…`` variable shown in ``--help``
(:mod:`configuration`); a flag given on the command line wins over its variable, which wins over
the default. The Kafka connection, the Milvus connection and the logging settings are the shared
groups of :mod:`configuration`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, model_validator
from pydantic_settings import NoDecode

from configuration import setting
from configuration.base import split_commas
from configuration.kafka import DEAD_LETTER_TOPIC, IMAGES_TOPIC, TAGS_TOPIC, KafkaConnection
from configuration.log_settings import LogSettings
from configuration.milvus import MilvusConnection
from schemas.dead_letter_bounds import MAX_INLINE_VALUE_BYTES
from worker.adapters.inflate_limits import DEFAULT_MAX_INFLATED_BYTES
from worker.adapters.photo_fetcher.origins import OriginPolicy, parse_origin

DEFAULT_GROUP = "landmark-workers"


def default_worker_id() -> str:
    """``<hostname>-<pid>``: unique among the workers of a group, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


def default_decode_threads() -> int:
    """One decoding thread a CPU, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _origins(entries: frozenset[str]) -> frozenset[str]:
    return frozenset(str(parse_origin(entry)) for entry in entries)


def _networks(entries: frozenset[str]) -> frozenset[str]:
    return frozenset(str(network) for network in OriginPolicy.parse((), entries).private_networks)


#: Comma-separated ``scheme://host:port`` entries (:func:`parse_origin`), in canonical form.
OriginSet = Annotated[
    frozenset[str], NoDecode, BeforeValidator(split_commas), AfterValidator(_origins)
]
#: Comma-separated CIDR networks (``10.0.0.0/8,fd00::/8``).
NetworkSet = Annotated[
    frozenset[str], NoDecode, BeforeValidator(split_commas), AfterValidator(_networks)
]


class WorkerSettings(KafkaConnection, MilvusConnection, LogSettings):
    """Everything the worker needs to know, passed explicitly into its constructors."""

    group_title: ClassVar[str] = "worker"

    model_dir: Path = setting(
        help="exported model directory (model.keras + manifest.json); watched for new exports"
    )
    images_topic: str = setting(IMAGES_TOPIC, help="input topic")
    tags_topic: str = setting(TAGS_TOPIC, help="tag event topic")
    dead_letter_topic: str = setting(
        DEAD_LETTER_TOPIC, env="LANDMARK_DLQ_TOPIC", help="dead-letter topic for bad input"
    )
    group_id: str = setting(DEFAULT_GROUP, help="consumer group")
    worker_id: str = setting(
        default_factory=default_worker_id,
        help="worker id in tag events and logs (default: hostname-pid)",
    )
    batch_max_records: int = setting(32, ge=1, help="most photos in one batch")
    batch_max_wait_ms: int = setting(200, ge=0, help="longest wait for a batch to fill, in ms")
    decode_threads: int = setting(
        default_factory=default_decode_threads,
        ge=1,
        help="threads decoding photos (default: one a CPU, at most 8)",
    )
    decoder: Literal["cpu", "gpu"] = setting(
        "cpu",
        help="photo decoding: cpu (Pillow, in --decode-threads threads), or gpu (JPEGs decoded "
        "and resized in batches on an NVIDIA GPU with nvImageCodec, the rest on the CPU; needs "
        "the gpu-decode extra and KERAS_BACKEND=jax)",
    )
    allocator: Literal["tuned", "system"] = setting(
        "tuned",
        help="C allocator: tuned (glibc keeps blocks under 32 MiB in the heap and returns memory "
        "past 128 MiB: camera-size photos reuse memory instead of mapping it afresh; a few "
        "hundred MB more resident) or system (glibc's defaults); MALLOC_MMAP_THRESHOLD_ and "
        "MALLOC_TRIM_THRESHOLD_ in the environment take precedence",
    )
    vote_k: int | None = setting(
        None, ge=1, help="neighbours in the vote (default: the model manifest's)"
    )
    vote_rule: Literal["margin", "weighted_knn"] | None = setting(
        None,
        help="decision rule: nearest landmark with a margin confidence, or the weighted kNN "
        "vote (default: the model manifest's)",
    )
    vote_weighting: Literal["uniform", "inverse_rank", "similarity"] | None = setting(
        None, help="weighting of the weighted kNN vote (default: the model manifest's)"
    )
    vote_threshold: float | None = setting(
        None, help="confidence below which the answer is 'no landmark' (default: the manifest's)"
    )
    reference_root: Path | None = setting(
        None, help="directory file:// references must lie under (unset: file:// refused)"
    )
    reference_origins: OriginSet = setting(
        frozenset(),
        help="comma-separated origins http(s):// references may reach, each scheme://host:port "
        "or scheme://host:first-last (e.g. https://images.example.com:443); unset: "
        "http(s):// refused",
    )
    reference_private_networks: NetworkSet = setting(
        frozenset(),
        help="comma-separated non-public networks (CIDR) an allowed origin's host may resolve "
        "to, e.g. 10.0.0.0/8 for an in-cluster image server (loopback, private, link-local "
        "and metadata addresses are refused otherwise, unless the origin names the address)",
    )
    reference_max_bytes: int = setting(
        32 * 1024 * 1024, ge=1, help="largest referenced photo, in bytes"
    )
    reference_timeout_s: float = setting(
        5.0,
        gt=0,
        help="time budget of the whole fetch of one http(s) reference (connecting, TLS, "
        "headers and body together), in seconds",
    )
    reference_keep_alive: bool = setting(
        True,
        help="keep http(s) connections to photo stores open for later fetches, up to "
        "--decode-threads a store (--no-reference-keep-alive: a connection a photo)",
    )
    max_inflated_batch_bytes: int = setting(
        DEFAULT_MAX_INFLATED_BYTES,
        ge=1024 * 1024,
        help="most bytes one compressed record batch may inflate to; a larger one is "
        "dead-lettered as unreadable_record without being inflated further",
    )
    dead_letter_max_inline_bytes: int = setting(
        MAX_INLINE_VALUE_BYTES,
        ge=0,
        le=MAX_INLINE_VALUE_BYTES,
        help="largest record value copied into a dead letter, in bytes (at most 512 KiB, so "
        "that a dead letter always fits the producer's limit)",
    )
    http_host: str = setting(
        "127.0.0.1", help="address of the /metrics, /healthz, /readyz endpoint"
    )
    http_port: int = setting(
        9108,
        ge=0,
        le=65535,
        help="port of the /metrics, /healthz, /readyz endpoint (0: any free port)",
    )
    milvus_timeout_s: float = setting(
        10.0, gt=0, help="time limit of each Milvus call, in seconds (a stalled call is retried)"
    )
    readiness_stage_max_s: float = setting(
        30.0,
        gt=0,
        help="/readyz answers 503 while one stage of the loop (polling, fetching and decoding, "
        "embedding, searching, publishing, committing) has run longer than this, in seconds",
    )
    readiness_loop_max_s: float = setting(
        60.0,
        gt=0,
        help="/readyz answers 503 when the loop has not begun an iteration for this long, "
        "in seconds",
    )
    publish_timeout_s: float = setting(
        30.0,
        gt=0,
        help="how long a batch's outputs may wait for the broker's acknowledgement "
        "before the batch is retried, in seconds",
    )
    backoff_initial_s: float = setting(
        0.5, ge=0, help="first wait before retrying while Kafka or Milvus is down"
    )
    backoff_max_s: float = setting(
        30.0, ge=0, help="longest wait between retries while Kafka or Milvus is down"
    )
    isolate_after_failures: int = setting(
        3,
        ge=1,
        help="failed publishes in a row of one batch, even ones that look like a broker "
        "outage, after which it is published part by part until the record whose output is "
        "refused stands alone (it then gets a minimal output_refused dead letter)",
    )
    reload_check_interval_s: float = setting(
        5.0, ge=0, help="how often to look for a new model export or gallery between batches"
    )
    lag_interval_s: float = setting(5.0, ge=0, help="how often to update the lag gauge")
    max_poll_interval_ms: int = setting(
        300_000, ge=1, help="longest time between polls before the group drops the worker, in ms"
    )
    session_timeout_ms: int = setting(
        10_000,
        ge=1,
        help="how long the group waits for a silent worker's heartbeat "
        "before moving its partitions, in ms",
    )
    auto_offset_reset: Literal["earliest", "latest"] = setting(
        "earliest", help="where a new group starts reading"
    )
    delivery: Literal["at-least-once", "exactly-once"] = setting(
        "at-least-once",
        help="at-least-once: outputs acknowledged, then offsets committed (a crash or rebalance "
        "may tag a photo twice; tag events are keyed by image id); exactly-once: each input "
        "partition's outputs and offset in one Kafka transaction, so that read_committed "
        "readers see each photo answered once (readers must use read_committed; every worker "
        "of the group must use the same mode)",
    )
    transaction_timeout_ms: int = setting(
        60_000,
        ge=1000,
        help="exactly-once: how long the broker lets a transaction stay open before aborting "
        "it, in ms (at most the broker's transaction.max.timeout.ms)",
    )

    @model_validator(mode="after")
    def _fits_in_the_poll_interval(self) -> WorkerSettings:
        """A batch must be done within the poll interval, or the group drops the worker.

        The loop gives a batch's fetches a quarter of the interval, and publishing it (the
        publish, the commit and one more publish when isolating a refused output) the half.
        """
        interval_s = self.max_poll_interval_ms / 1000
        if self.reference_timeout_s > interval_s / 4:
            raise ValueError(
                "--reference-timeout-s must be at most a quarter of --max-poll-interval-ms: "
                "the fetches of one batch get a quarter of the poll interval"
            )
        if self.delivery == "exactly-once" and self.transaction_timeout_ms < 1000 * (
            self.publish_timeout_s
        ):
            raise ValueError(
                "--transaction-timeout-ms must be at least --publish-timeout-s: a transaction "
                "lasts as long as its publish"
            )
        if 3 * self.publish_timeout_s > interval_s / 2:
            raise ValueError(
                "3 x --publish-timeout-s must be at most half of --max-poll-interval-ms: "
                "publishing and committing a batch must end within the poll interval"
            )
        return self


@dataclass(frozen=True)
class LoopSettings:
    """The parts of :class:`worker.settings.WorkerSettings` the loop itself uses."""

    worker_id: str
    model_dir: Path
    batch_max_records: int = 32
    batch_max_wait_ms: int = 200
    decode_threads: int = 2
    vote_k: int | None = None
    vote_weighting: str | None = None
    vote_threshold: float | None = None
    vote_rule: str | None = None
    dead_letter_max_inline_bytes: int = 512 * 1024
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    reload_check_interval_s: float = 5.0
    lag_interval_s: float = 5.0
    isolate_after_failures: int = 3
    max_poll_interval_s: float = 300.0
