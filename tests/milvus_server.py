"""Milvus Lite's own gRPC server as a subprocess, for integration tests of the network path.

``milvus-lite server --data-dir D --host 127.0.0.1 --port N`` is the real server a worker on
another machine would reach; tests start it on a free port, wait until it answers the Milvus
protocol, and stop it again (SIGTERM, which it handles by closing its data cleanly).

Usage::

    with MilvusLiteServer(tmp_path / "milvus-data") as server:
        client = MilvusClient(uri=server.uri)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pymilvus import MilvusClient

_HOST = "127.0.0.1"


def free_port(host: str = _HOST) -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def milvus_lite_command() -> list[str]:
    """The ``milvus-lite`` console command of this environment (or ``python -m milvus_lite``)."""
    script = Path(sys.executable).with_name("milvus-lite")
    if script.is_file():
        return [str(script)]
    found = shutil.which("milvus-lite")
    if found:
        return [found]
    return [sys.executable, "-m", "milvus_lite"]


class MilvusLiteServer:
    """A ``milvus-lite server`` subprocess bound to 127.0.0.1 on a free (or given) port.

    Args:
        data_dir: the server's data directory (created if missing).
        port: the port to listen on; a free one when None. Restarting with the same
            ``data_dir`` and ``port`` gives a client the same server back.
        start_timeout_s: how long to wait for the server to answer before giving up.
    """

    def __init__(self, data_dir: Path, port: int | None = None, start_timeout_s: float = 60.0):
        self.data_dir = Path(data_dir)
        self.port = port if port is not None else free_port()
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = self.data_dir.with_name(self.data_dir.name + "-server.log")

    @property
    def uri(self) -> str:
        """The URI a pymilvus client connects with."""
        return f"http://{_HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The server's output (appended to across restarts)."""
        return self._log_path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and block until it answers a GetVersion call.

        Raises:
            RuntimeError: the server exited early or did not answer in time (its log is quoted).
        """
        if self.running:
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        command = [
            *milvus_lite_command(),
            "server",
            "--data-dir",
            str(self.data_dir),
            "--host",
            _HOST,
            "--port",
            str(self.port),
        ]
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"milvus-lite server exited early:\n{self._log_tail()}")
            if self._answers():
                self._note(
                    f"answering after {time.monotonic() - deadline + self.start_timeout_s:.1f} s"
                )
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"milvus-lite server did not answer on port {self.port} within "
            f"{self.start_timeout_s:.0f} s:\n{self._log_tail()}"
        )

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to the server and every process it started (``SIGSTOP`` freezes it)."""
        if self._process is None:
            return
        for pid in [self._process.pid, *_descendants(self._process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self) -> None:
        """Stop the server: SIGTERM (clean shutdown), then SIGKILL.

        Not SIGINT: in CI runs the server printed "Shutting down..." on SIGINT and then waited
        30 s every time, while SIGTERM stops it at once with its data kept.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        started = time.monotonic()
        for name, send, wait_s in (
            ("SIGTERM", process.terminate, 20.0),
            ("SIGKILL", process.kill, 5.0),
        ):
            send()
            try:
                process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
            self._note(f"stopped by {name} after {time.monotonic() - started:.1f} s")
            return

    def _note(self, line: str) -> None:
        with open(self._log_path, "a") as log:
            log.write(f"[test harness] {line}\n")

    def _answers(self) -> bool:
        try:
            with socket.create_connection((_HOST, self.port), timeout=0.5):
                pass
        except OSError:
            return False
        try:
            client = MilvusClient(uri=self.uri, timeout=2.0)
        except Exception:  # the port is open but the gRPC service is not ready yet
            return False
        try:
            return bool(client.get_server_version(timeout=2.0))
        except Exception:
            return False
        finally:
            client.close()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> MilvusLiteServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid``, read from ``/proc`` (children first)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue += children.get(child, [])
    return found
