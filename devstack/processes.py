"""Process helpers shared by the demo, ``bench/`` and the tests: commands, services, topics, metrics.

The local Kafka and Milvus Lite servers are the scripts of ``deploy/local/``: this package works
from a checkout of the repository, which is why it is not installed as a console command.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_SCRIPTS = REPO_ROOT / "deploy" / "local"
#: What every child process gets: TensorFlow's start-up chatter off, unbuffered output.
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}

_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN|\+Inf)$")


def child_env(**extra: str) -> dict[str, str]:
    """The current environment plus :data:`CHILD_ENV` and ``extra``."""
    return {**os.environ, **CHILD_ENV, **extra}


def run_command(
    cmd: Sequence[str | Path],
    *,
    log: Path | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    tail_lines: int = 25,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` in the repository root; output to the terminal or to ``log``.

    Raises:
        RuntimeError: ``check`` and the command failed; the message quotes the log's last lines.
    """
    args = [str(c) for c in cmd]
    full_env = dict(env) if env is not None else child_env()
    if log is None:
        return subprocess.run(args, env=full_env, cwd=REPO_ROOT, check=check)
    with log.open("wb") as out:
        result = subprocess.run(
            args, env=full_env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    if check and result.returncode != 0:
        shown = " ".join(a.replace(str(REPO_ROOT) + "/", "") for a in args)
        tail = log.read_text(errors="replace").splitlines()[-tail_lines:]
        raise RuntimeError(
            f"{shown} failed (exit {result.returncode}); last lines of {log}:\n" + "\n".join(tail)
        )
    return result


def ensure_local_service(
    name: str, env: Mapping[str, str], log: Path | None = None
) -> Callable[[], object] | None:
    """Start ``deploy/local/<name>.sh`` unless one already answers; return how to stop it.

    Args:
        name: ``kafka`` or ``milvus``.
        env: The script's settings (``KAFKA_PORT``, ``MILVUS_PORT``, ``MILVUS_DATA_DIR`` …).
        log: Where the script's output goes (default: the terminal).

    Returns:
        A function that stops the service this call started, or None when one was running.
    """
    script = LOCAL_SCRIPTS / f"{name}.sh"
    full_env = child_env(**env)
    status = subprocess.run(
        [str(script), "status"], env=full_env, cwd=REPO_ROOT, capture_output=True, check=False
    )
    if status.returncode == 0:
        return None
    run_command([script, "start"], log=log, env=full_env)
    return lambda: run_command([script, "stop"], check=False, env=full_env)


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def scrape(port: int, timeout_s: float = 5.0) -> str:
    """The Prometheus exposition of a worker on ``127.0.0.1:port`` ('' when unreachable)."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=timeout_s
        ) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def metric_values(text: str, name: str) -> dict[str, float]:
    """Label text → value for one metric name, summed over the exposition."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            labels = match.group(2) or ""
            values[labels] = values.get(labels, 0.0) + float(match.group(3))
    return values


def wait_until_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait for a worker's ``/readyz``.

    Raises:
        RuntimeError: the process exited, or it was not ready in time.
    """
    deadline = time.monotonic() + timeout_s
    while not http_ok(f"http://127.0.0.1:{port}/readyz"):
        if process.poll() is not None:
            raise RuntimeError(f"worker on port {port} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker on port {port} not ready after {timeout_s:.0f}s")
        time.sleep(1)


def stop_all(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    """SIGTERM (a worker finishes its batch, commits and leaves the group), then SIGKILL."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_topics(
    connection: str | Mapping[str, Any], names: Sequence[str], partitions: int, client_id: str
) -> None:
    """Create Kafka topics with replication factor 1 (a single local broker).

    Args:
        connection: bootstrap servers, or the Kafka connection group's client options.
    """
    from kafka.admin import KafkaAdminClient, NewTopic

    from configuration.kafka import connection_options

    admin = KafkaAdminClient(**connection_options(connection), client_id=client_id)
    try:
        admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        admin.close()
