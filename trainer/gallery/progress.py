"""Progress of a gallery load's embedding and insert phase, and its default log display."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadProgress:
    """Progress of the embedding and insert phase, passed to the progress callback."""

    done: int
    total: int
    inserted: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """References handled per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first reference)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def describe(self) -> str:
        """``"1200/3195 references (37.6%), 1000 inserted, 41.2/s, ETA 48 s"``."""
        share = 100.0 * self.done / self.total if self.total else 100.0
        eta = "?" if self.eta_s is None else f"{self.eta_s:.0f} s"
        return (
            f"{self.done}/{self.total} references ({share:.1f}%), {self.inserted} inserted, "
            f"{self.rate:.1f}/s, ETA {eta}"
        )


class ProgressLog:
    """The default progress display: a log line at most every ``every_s`` seconds, and at the end."""

    def __init__(self, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._last: float | None = None
        self.lines: int = 0

    def __call__(self, progress: LoadProgress) -> None:
        now = self.clock()
        finished = progress.done >= progress.total
        if not finished and self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        self.lines += 1
        logger.info("embedded %s", progress.describe())
