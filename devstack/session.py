"""The plumbing of a demo run: numbered steps, commands shown and run, and the clean-up.

A :class:`Session` prints each step, shows each command the way a user would type it and runs it
(output to the terminal or to a log under the work folder), starts background processes with
their own logs, and undoes what it was told about in reverse order, also on failure or Ctrl-C.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from devstack.processes import REPO_ROOT, child_env, run_command


class Session:
    """Where a run writes, the environment its commands get, and what it must undo at the end.

    Attributes:
        work: The run's work folder; command logs go to its ``logs/``.
        env: The environment of every command (:func:`devstack.processes.child_env`).
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = child_env()
        self._cleanups: list[tuple[str, Callable[[], object]]] = []
        self._step_no = 0

    @property
    def logs(self) -> Path:
        """The folder of the commands' logs."""
        return self.work / "logs"

    def open(self) -> None:
        """Create the work folder and its ``logs/``."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)

    def step(self, title: str) -> float:
        """Print the next step's number and title; return when it started (monotonic seconds)."""
        self._step_no += 1
        print(f"\n[{self._step_no}] {title}", flush=True)
        return time.monotonic()

    def run(self, cmd: Sequence[str | Path], log: str | None = None, **env: str) -> None:
        """Run a command; its output goes to the terminal, or to a log file under the work dir.

        Raises:
            RuntimeError: the command failed (see :func:`devstack.processes.run_command`).
        """
        shown = " ".join(str(c).replace(str(REPO_ROOT) + "/", "") for c in cmd)
        print(f"  $ {shown}", flush=True)
        log_path = None if log is None else self.logs / log
        run_command(cmd, log=log_path, env=dict(self.env, **env))

    def run_into(self, cmd: Sequence[str | Path], output: Path) -> None:
        """Run a command quietly, its standard output into ``output`` (stderr to the terminal).

        Raises:
            subprocess.CalledProcessError: the command failed.
        """
        with output.open("w") as out:
            subprocess.run(
                [str(c) for c in cmd], check=True, env=self.env, cwd=REPO_ROOT, stdout=out
            )

    def start(self, cmd: Sequence[str | Path], log: str) -> subprocess.Popen[bytes]:
        """Start a command in the background, its output (stdout and stderr) to ``logs/<log>``."""
        with (self.logs / log).open("wb") as out:
            return subprocess.Popen(
                [str(c) for c in cmd],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def undo_at_end(self, name: str, action: Callable[[], object]) -> None:
        """Have :meth:`cleanup` call ``action`` (``name`` is shown if it fails)."""
        self._cleanups.append((name, action))

    def cleanup(self) -> None:
        """Undo what the run started, latest first; a failure is reported and the rest goes on."""
        for name, action in reversed(self._cleanups):
            try:
                action()
            except Exception as error:  # clean-up goes on whatever failed
                print(f"  ({name} failed: {error})", file=sys.stderr)
        self._cleanups.clear()
