"""A private single-node Kafka for one test module: ``deploy/local/kafka.sh`` on free ports with
its own data folder, so that freezing it or securing it cannot disturb the other tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.integration.worker_stack import REPO_ROOT, free_port

KAFKA_SCRIPT = REPO_ROOT / "deploy" / "local" / "kafka.sh"


@dataclass(frozen=True)
class PrivateBroker:
    """The broker's PLAINTEXT bootstrap, its process id and the script's environment."""

    bootstrap: str
    pid: int
    env: Mapping[str, str]


@contextlib.contextmanager
def private_broker(data_dir: Path, **settings: str) -> Iterator[PrivateBroker]:
    """Start a broker (the jars must be resolved: depend on ``kafka_bootstrap``), stop it after.

    Args:
        data_dir: its storage folder.
        **settings: more ``deploy/local/kafka.sh`` variables (``KAFKA_TLS_DIR`` …).
    """
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "KAFKA_DATA_DIR": str(data_dir),
        "KAFKA_STOP_TIMEOUT": "10",
        **settings,
    }
    started = subprocess.run(
        [str(KAFKA_SCRIPT), "start"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int((REPO_ROOT / ".run" / f"kafka-{port}.pid").read_text().split()[0])
    try:
        yield PrivateBroker(f"127.0.0.1:{port}", pid, env)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a test may have frozen it
        subprocess.run(
            [str(KAFKA_SCRIPT), "stop"], env=env, cwd=REPO_ROOT, capture_output=True, timeout=120
        )
