"""Repeating Milvus calls that failed transiently, after growing waits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from worker.adapters.milvus.errors import GalleryUnavailableError, is_transient

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BACKOFF_S = 10.0


def backoff_delays(
    retries: int, backoff_s: float, max_backoff_s: float = MAX_BACKOFF_S
) -> list[float]:
    """The waits before each retry: ``backoff_s * 2**i`` capped at ``max_backoff_s``."""
    return [min(max_backoff_s, backoff_s * 2.0**attempt) for attempt in range(retries)]


@dataclass(frozen=True)
class RetryPolicy:
    """How the gallery's Milvus calls are repeated after a transient failure.

    Attributes:
        delays: the wait before each retry (:func:`backoff_delays`); no retries when empty.
        sleep: how to wait (``time.sleep``), injectable so that callers can interrupt waits.
        alias: the gallery's alias, named in the errors and logs.
        on_failure: told of every failed attempt (the call's name and the error), retried or
            not, so that a stall that retries hide still shows in the metrics and readiness.
    """

    delays: Sequence[float]
    sleep: Callable[[float], None]
    alias: str
    on_failure: Callable[[str, BaseException], None] = lambda what, error: None

    def call(self, what: str, call: Callable[[], T]) -> T:
        """Return ``call()``, repeating it while it fails transiently and retries are left.

        Args:
            what: the call's name for errors and logs (``search``, ``describe_alias``...).
            call: the Milvus call.

        Raises:
            GalleryUnavailableError: the call failed for good (not transient, or retries spent),
                with the last failure as its cause.
        """
        for attempt in range(len(self.delays) + 1):
            try:
                return call()
            except Exception as error:
                self.on_failure(what, error)
                if not is_transient(error) or attempt == len(self.delays):
                    raise GalleryUnavailableError(
                        f"Milvus {what} failed for alias {self.alias!r} "
                        f"after {attempt + 1} attempt(s): {error}"
                    ) from error
                delay = self.delays[attempt]
                logger.warning(
                    "Milvus %s failed (%s), retry %d/%d in %.2f s",
                    what,
                    type(error).__name__,
                    attempt + 1,
                    len(self.delays),
                    delay,
                )
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
