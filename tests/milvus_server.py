"""Milvus servers as subprocesses, for integration tests of the network path.

:class:`MilvusLiteServer`: ``milvus-lite server --data-dir D --host 127.0.0.1 --port N``, Milvus
Lite's own gRPC server (a re-implementation of Milvus in Python); tests start it on a free port,
wait until it answers the Milvus protocol, and stop it again (SIGTERM, which it handles by
closing its data cleanly).

:class:`MilvusStandaloneServer`: the real Milvus standalone server (Go and C++, embedded etcd,
RocksMQ and local storage in one process), as PyPI's ``milvus`` package ships it (2.3.5 for
Linux x86_64, in the ``dev`` extra). Deployments run Milvus standalone, so code that passes
against Lite is checked against it too. It starts in about 2 s once its binary is unpacked
(about 4 s, once per checkout, into ``.cache/milvus-server-<version>``).

Usage (both alike)::

    with MilvusLiteServer(tmp_path / "milvus-data") as server:
        client = MilvusClient(uri=server.uri)
"""

from __future__ import annotations

import contextlib
import ctypes
import lzma
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pymilvus import MilvusClient

_HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
#: The release of PyPI's ``milvus`` package the ``dev`` extra pins (its server's version).
MILVUS_STANDALONE_VERSION = "2.3.5"


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


class _ServerProcess:
    """What both test servers share: a URI on 127.0.0.1, a log file, a context manager."""

    port: int
    _process: subprocess.Popen[bytes] | None
    _log_path: Path

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

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

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (for CPU accounting), None when stopped."""
        return self._process.pid if self.running and self._process is not None else None

    def _note(self, line: str) -> None:
        with open(self._log_path, "a") as log:
            log.write(f"[test harness] {line}\n")

    def _log_tail(self, lines: int = 30) -> str:
        return _tail(self._log_path, lines)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MilvusLiteServer(_ServerProcess):
    """A ``milvus-lite server`` subprocess bound to 127.0.0.1 on a free (or given) port.

    Args:
        data_dir: the server's data directory (created if missing).
        port: the port to listen on; a free one when None. Restarting with the same
            ``data_dir`` and ``port`` gives a client the same server back.
        start_timeout_s: how long to wait for the server to answer before giving up.
        env: environment variables for the server on top of this process's; by default
            ``OPENBLAS_NUM_THREADS=1``, as ``deploy/local/milvus.sh`` starts it (OpenBLAS's
            spinning threads were most of the server's CPU).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        start_timeout_s: float = 60.0,
        env: Mapping[str, str] | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.port = port if port is not None else free_port()
        self.start_timeout_s = start_timeout_s
        self.env = dict(env) if env is not None else {"OPENBLAS_NUM_THREADS": "1"}
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = self.data_dir.with_name(self.data_dir.name + "-server.log")

    def start(self) -> None:
        """Start the server and block until it answers GetVersion and ListCollections calls.

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
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
            )
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

    def _answers(self) -> bool:
        return milvus_answers(self.port)


class MilvusStandaloneServer(_ServerProcess):
    """The real Milvus standalone server of PyPI's ``milvus`` package, bound to free ports.

    The package's own ``MilvusServer`` is not used to run it: it changes the working directory
    of the whole test process while starting, stops the server with SIGKILL after 1 s, and
    starts its embedded etcd on the fixed ports 2379 and 2380. This class writes the package's
    configuration (its ``MilvusServerConfig``) with a free port for every service, 127.0.0.1 as
    every component's address, and an embedded-etcd configuration on free ports, then runs the
    binary itself in a process group of its own.

    Milvus 2.3's gRPC and metrics ports listen on every interface (it has no setting for the
    listen address); only the embedded etcd listens on 127.0.0.1 alone. The ports are free ones
    the OS picked, and the server answers without authentication, as Milvus Lite does.

    Args:
        data_dir: the server's data directory (etcd, RocksMQ, segments, its configuration and
            logs; created if missing).
        port: the Milvus (proxy) port; a free one when None. Every other port is picked once,
            so that restarting with the same ``data_dir`` gives a client the same server back.
        start_timeout_s: how long to wait for the server to answer before giving up.
        binary_dir: where the server's binary and libraries are unpacked (once per version).
        settings: Milvus settings by dotted key (``queryCoord.checkInterval``) over
            :attr:`QUICK_SETTINGS`, passed as environment variables.

    Raises:
        ModuleNotFoundError: the ``milvus`` package is not installed (the ``dev`` extra installs
            it on Linux x86_64 only; see :func:`milvus_standalone_missing`).
    """

    #: Seconds Milvus may take for its own graceful stop (its default is 1800); it is killed
    #: 1 s after that.
    GRACEFUL_STOP_S = 2
    #: Settings for a quick stop: the query node does not wait for its segments to move to
    #: another query node (a standalone server has none; it waited out the whole graceful stop).
    STOP_SETTINGS: Mapping[str, object] = {
        "common.gracefulStopTimeout": GRACEFUL_STOP_S,
        "queryNode.gracefulStopTimeout": 0,
    }
    #: Settings that make the server quicker for tests, none of them one a deployment would
    #: change: a flush waits 0.2 s instead of 2 s for the segment assignments of the rows to
    #: expire, and the query coordinator looks for channels and segments to load (and at what
    #: the query node has loaded) every 0.1 s instead of every 0.5-1 s. Creating, indexing and
    #: loading a collection then takes 2 s instead of 3, a flush 1 s instead of 3, releasing
    #: and loading again 2 s instead of 4.
    QUICK_SETTINGS: Mapping[str, object] = {
        "dataCoord.segment.assignmentExpiration": 200,
        "queryCoord.checkInterval": 100,
        "queryCoord.checkChannelInterval": 100,
        "queryCoord.checkSegmentInterval": 100,
        "queryCoord.distPullInterval": 100,
    }

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        start_timeout_s: float = 120.0,
        binary_dir: Path | None = None,
        settings: Mapping[str, object] | None = None,
    ):
        import milvus

        self._package = Path(milvus.__file__).parent
        self.version = str(milvus.__version__)
        self.data_dir = Path(data_dir).resolve()
        self.port = port if port is not None else free_port()
        self.start_timeout_s = start_timeout_s
        self.settings = {**self.STOP_SETTINGS, **self.QUICK_SETTINGS, **(settings or {})}
        self.binary_dir = binary_dir or REPO_ROOT / ".cache" / f"milvus-server-{self.version}"
        probe = milvus.MilvusServerConfig()
        self._ports = {
            key: free_port()
            for key in probe.configurable_items
            if key.endswith("_port") and key not in ("proxy_port", "etcd_port")
        }
        self._etcd_port = free_port()
        self._etcd_peer_port = free_port()
        self._metrics_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = self.data_dir.with_name(self.data_dir.name + "-server.log")

    def start(self) -> None:
        """Start the server and block until it reports healthy and answers ``list_collections``.

        Raises:
            RuntimeError: a port is taken, or the server exited early or did not answer in time
                (its log is quoted).
        """
        if self.running:
            return
        binary = self._unpack()
        if not (self.data_dir / "configs" / "milvus.yaml").is_file():
            # Once: a restart keeps the ports (just-closed ones may not be bindable by the
            # check the package's configuration makes, while Milvus itself binds them again).
            self._configure()
        env = {
            **os.environ,
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(self._metrics_port),
            "MILVUS_RUN_DIR": str(self.data_dir / "run"),
            "ETCD_CONFIG_PATH": str(self.data_dir / "configs" / "embed-etcd.yaml"),
            **{_environment_name(key): str(value) for key, value in self.settings.items()},
            "LD_LIBRARY_PATH": os.pathsep.join(
                filter(None, [str(binary.parent), os.environ.get("LD_LIBRARY_PATH")])
            ),
        }
        started = time.monotonic()
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                [str(binary), "run", "standalone"],
                cwd=self.data_dir,  # where it finds configs/milvus.yaml
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own, stopped as a whole
                # Linux tells a child of its parent's death when the *thread* that started it
                # ends: only a server started from the main thread can be tied to the test run.
                preexec_fn=(
                    _die_with_parent
                    if threading.current_thread() is threading.main_thread()
                    else None
                ),
            )
        deadline = started + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Milvus {self.version} exited early with {self._process.returncode}:\n"
                    f"{self._log_tail()}"
                )
            if self._healthy() and milvus_answers(self.port):
                self._note(f"answering after {time.monotonic() - started:.1f} s")
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"Milvus {self.version} did not answer on port {self.port} within "
            f"{self.start_timeout_s:.0f} s:\n{self._log_tail()}"
        )

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to the server's process group (``SIGSTOP`` freezes it)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    def stop(self) -> None:
        """Stop the server's process group: SIGTERM (Milvus's graceful stop), then SIGKILL.

        An idle Milvus 2.3.5 stops at once on SIGTERM (ending with a harmless "context canceled"
        panic, exit status -6); once a collection has been loaded, its query coordinator's
        shutdown hangs and Milvus's own graceful-stop timeout does not end it, so it is killed
        after :attr:`GRACEFUL_STOP_S` + 1 s. The test data is thrown away; what is left of the
        group is killed too, so that nothing is left running.
        """
        process, self._process = self._process, None
        if process is None:
            return
        started = time.monotonic()
        stopped_by = "itself"
        if process.poll() is None:
            for name, signum, wait_s in (
                ("SIGTERM", signal.SIGTERM, self.GRACEFUL_STOP_S + 1.0),
                ("SIGKILL", signal.SIGKILL, 10.0),
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signum)
                try:
                    process.wait(timeout=wait_s)
                except subprocess.TimeoutExpired:
                    continue
                stopped_by = name
                break
        with contextlib.suppress(ProcessLookupError):  # anything the server left in its group
            os.killpg(process.pid, signal.SIGKILL)
        self._note(
            f"stopped by {stopped_by} after {time.monotonic() - started:.1f} s "
            f"(exit status {process.poll()})"
        )

    def _unpack(self) -> Path:
        """Unpack the binary and its libraries (``milvus/data/bin/*.lzma``) once; its path."""
        packed = self._package / "data" / "bin"
        target = self.binary_dir / "bin"
        done = target / f".unpacked-{self.version}"
        if not done.is_file():
            target.mkdir(parents=True, exist_ok=True)
            for source in sorted(packed.glob("*.lzma")):
                # Written beside and renamed: a concurrent run never sees half a file, and a
                # binary that another session is running is replaced, not overwritten.
                fd, temporary = tempfile.mkstemp(dir=target, prefix=f".{source.stem}.")
                with os.fdopen(fd, "wb") as out, lzma.open(source) as unpacked:
                    shutil.copyfileobj(unpacked, out, 1 << 20)
                os.chmod(temporary, 0o755)
                os.replace(temporary, target / source.stem)
            done.write_text(self.version)
        return target / "milvus"

    def _configure(self) -> None:
        """Write ``configs/milvus.yaml`` (the package's template) and the embedded etcd's file."""
        import milvus

        config = milvus.MilvusServerConfig(
            data_dir=str(self.data_dir),
            proxy_port=self.port,
            etcd_port=self._etcd_port,
            **self._ports,
        )
        for component in (
            "rootCoord",
            "proxy",
            "queryCoord",
            "queryNode",
            "indexCoord",
            "indexNode",
            "dataCoord",
            "dataNode",
        ):
            config.set(f"{component}.ip", _HOST)
        try:
            config.resolve()  # binds each port once to check it is free
        finally:
            config.cleanup_listen_ports()
        etcd_client = f"http://{_HOST}:{self._etcd_port}"
        etcd_peer = f"http://{_HOST}:{self._etcd_peer_port}"
        # Read by Milvus's embedded etcd (etcd.config.path, set by ETCD_CONFIG_PATH); without it
        # etcd listens on 2379 and 2380 and two servers on one machine clash.
        (self.data_dir / "configs" / "embed-etcd.yaml").write_text(
            f"name: default\n"
            f"listen-client-urls: {etcd_client}\n"
            f"advertise-client-urls: {etcd_client}\n"
            f"listen-peer-urls: {etcd_peer}\n"
            f"initial-advertise-peer-urls: {etcd_peer}\n"
            f"initial-cluster: default={etcd_peer}\n"
        )

    def _healthy(self) -> bool:
        """Whether ``/healthz`` on the metrics port says every component is up."""
        url = f"http://{_HOST}:{self._metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                return b"OK" in response.read()
        except (urllib.error.URLError, OSError):
            return False


def milvus_standalone_missing() -> str | None:
    """Why :class:`MilvusStandaloneServer` cannot run here (a skip reason), None when it can."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return (
            f"the milvus {MILVUS_STANDALONE_VERSION} package's server binary is tested on "
            f"Linux x86_64 only, this is {sys.platform} {os.uname().machine}"
        )
    try:
        import milvus
    except ImportError:
        return (
            f"the milvus package (Milvus {MILVUS_STANDALONE_VERSION} standalone) is not "
            "installed: pip install -e '.[dev]'"
        )
    if milvus.__version__ != MILVUS_STANDALONE_VERSION:
        return (
            f"milvus {milvus.__version__} is installed, the tests expect "
            f"{MILVUS_STANDALONE_VERSION}"
        )
    return None


@contextlib.contextmanager
def collections_dropped_after(uri: str) -> Iterator[None]:
    """Drop every collection made inside the block, and its aliases, when the block ends.

    So that tests can share one server. The aliases go first: Milvus 2.3 drops a collection
    that has aliases but keeps their names taken (``create_alias`` then fails with "alias
    already exist" while ``list_aliases`` shows none), where Milvus 2.4 and later refuse the drop.
    """
    client = MilvusClient(uri=uri)
    before = set(client.list_collections())
    try:
        yield
    finally:
        try:
            for name in sorted(set(client.list_collections()) - before):
                for alias in client.list_aliases(name).get("aliases", []):
                    client.drop_alias(alias)
                client.drop_collection(name)
        finally:
            client.close()


def milvus_answers(port: int) -> bool:
    """Whether a Milvus server on 127.0.0.1:``port`` answers GetVersion and ListCollections."""
    try:
        with socket.create_connection((_HOST, port), timeout=0.5):
            pass
    except OSError:
        return False
    try:
        client = MilvusClient(uri=f"http://{_HOST}:{port}", timeout=2.0)
    except Exception:  # the port is open but the gRPC service is not ready yet
        return False
    try:
        client.list_collections(timeout=2.0)
        return bool(client.get_server_version(timeout=2.0))
    except Exception:
        return False
    finally:
        client.close()


def _environment_name(key: str) -> str:
    """The environment variable Milvus reads a setting from: ``a.bC`` is ``A_BC``.

    (Milvus compares names with case, dots and underscores ignored, and its environment wins
    over ``milvus.yaml``.)
    """
    return key.replace(".", "_").upper()


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


def _prctl() -> Any:
    """libc's ``prctl``, looked up before any fork (None where there is none)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started it dies.

    So that a test run killed outright (SIGKILL, a CI time limit) leaves no server behind.
    SIGKILL, not SIGTERM: Milvus 2.3.5 does not finish a SIGTERM once it has loaded a collection.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


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
