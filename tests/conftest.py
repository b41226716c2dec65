"""Fixtures shared by every test: the real local services and the shared photo data.

Services are the ones ``deploy/local/*.sh`` start (``make kafka-start``, ``make prometheus-start``,
or ``make test``, which starts and stops them itself). A fixture whose service does not answer
skips the test with a reason that says how to start it; nothing is ever faked.

Settings (environment):
    LANDMARK_KAFKA_BOOTSTRAP   Kafka bootstrap servers      (default 127.0.0.1:19092)
    LANDMARK_PROMETHEUS_URL    Prometheus base URL          (default http://127.0.0.1:19090)
    LANDMARK_SHARED_DATA       the shared data folder       (default ../shared/data from the repo)
    LANDMARK_DATA_DIR          landmark photo folders       (default ../shared/data/landmarks)
"""

from __future__ import annotations

import os

# Before anything imports TensorFlow: its C++ start-up chatter buries test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

from tests.kafka_topics import wait_for_leaders

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:19090"
PROMETHEUS_TARGETS_DIR = REPO_ROOT / ".run" / "prometheus" / "targets"

# kafka-python logs every refused connection; the skip reason already says what is wrong.
logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _setting_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default.resolve()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of a broker that has answered a real metadata request."""
    bootstrap = os.environ.get("LANDMARK_KAFKA_BOOTSTRAP", DEFAULT_KAFKA_BOOTSTRAP)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="landmark-tests-probe",
            request_timeout_ms=5000,
            api_version_auto_timeout_ms=5000,
        )
        try:
            admin.describe_cluster()
        finally:
            admin.close()
    except Exception as error:
        pytest.skip(
            f"no Kafka broker answers a metadata request at {bootstrap} ({error!r}); "
            "start one with `make kafka-start` or point LANDMARK_KAFKA_BOOTSTRAP at one"
        )
    return bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    """An admin client on the test broker, shared by the session."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="landmark-tests-admin")
    yield admin
    admin.close()


@pytest.fixture
def kafka_topic_factory(kafka_admin: KafkaAdminClient) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics (``create(partitions=4, prefix="test") -> name``).

    Every topic is created with replication factor 1 and waited for until all partitions have a
    leader; all are deleted when the test ends.
    """
    created: list[str] = []

    def create(partitions: int = 4, prefix: str = "test") -> str:
        if partitions < 1:
            raise ValueError(f"a topic needs at least one partition, got {partitions}")
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        kafka_admin.create_topics([NewTopic(name, partitions, 1)])
        wait_for_leaders(kafka_admin, name, partitions)
        created.append(name)
        return name

    yield create
    if created:
        with contextlib.suppress(KafkaError):  # already gone: nothing left to clean
            kafka_admin.delete_topics(created)


@pytest.fixture
def kafka_topic(kafka_topic_factory: Callable[..., str]) -> str:
    """A fresh topic with 4 partitions, deleted after the test."""
    return kafka_topic_factory(4)


def _prometheus_ready(url: str) -> str | None:
    """None when ``url`` answers /-/ready with 200, else why not."""
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        return repr(error)


@pytest.fixture(scope="session")
def prometheus_url() -> str:
    """Base URL (no trailing slash) of a Prometheus that answers ``/-/ready``."""
    url = os.environ.get("LANDMARK_PROMETHEUS_URL", DEFAULT_PROMETHEUS_URL).rstrip("/")
    problem = _prometheus_ready(url)
    if problem is not None:
        pytest.skip(
            f"no Prometheus is ready at {url} ({problem}); "
            "start one with `make prometheus-start` or point LANDMARK_PROMETHEUS_URL at one"
        )
    return url


@pytest.fixture(scope="session")
def prometheus_api(prometheus_url: str) -> Callable[[str], Any]:
    """GET a Prometheus HTTP API path (e.g. ``/api/v1/targets``) and return its ``data``."""

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"{prometheus_url}{path}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus answered {path} with {body!r}")
        return body["data"]

    return get


@pytest.fixture(scope="session")
def prometheus_targets_dir() -> Path:
    """Folder whose ``*.json`` file_sd target files the local Prometheus scrapes (job landmark-worker)."""
    PROMETHEUS_TARGETS_DIR.mkdir(parents=True, exist_ok=True)
    return PROMETHEUS_TARGETS_DIR


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The read-only shared data folder (``LANDMARK_SHARED_DATA``)."""
    path = _setting_path("LANDMARK_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} does not exist; set LANDMARK_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def landmarks_dir() -> Path:
    """Folder of landmark folders of photos (``LANDMARK_DATA_DIR``)."""
    path = _setting_path("LANDMARK_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "landmarks")
    if not path.is_dir() or not any(path.iterdir()):
        pytest.skip(f"landmark photo folder {path} is missing or empty; set LANDMARK_DATA_DIR")
    return path
