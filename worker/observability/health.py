"""Liveness and readiness: what ``/healthz`` and ``/readyz`` answer.

``/healthz`` (liveness) fails once the loop has not turned for ``stall_after_s``: the process is
stuck and should be restarted. ``/readyz`` (readiness) says "this worker is making progress now":
it answers 200 only while all of these hold:

- the model and the gallery are loaded and the worker holds partitions;
- it is not blocked (starting, backing off after a failure, shutting down);
- the loop began an iteration within ``loop_within_s``;
- the stage it is in (polling, decoding, embedding, searching, publishing, committing, switching
  models) has lasted at most ``stage_within_s``;
- no dependency (Milvus, Kafka) failed within ``failure_memory_s`` without succeeding since.

Its JSON body says which of them failed, and when the last search and commit succeeded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ReadinessLimits:
    """How long each sign of progress may be missing before ``/readyz`` answers 503.

    Attributes:
        loop_within_s: Longest time since the loop began an iteration.
        stage_within_s: Longest time in one stage.
        failure_memory_s: How long a failed call to a dependency counts, unless one succeeds.
    """

    loop_within_s: float = 60.0
    stage_within_s: float = 30.0
    failure_memory_s: float = 30.0


class HealthState:
    """Thread-safe flags and times the loop sets and the HTTP endpoint reads.

    Args:
        stall_after_s: ``/healthz`` fails when the loop has not beaten for this long.
        limits: The readiness bounds.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        stall_after_s: float = 120.0,
        limits: ReadinessLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._stall_after_s = stall_after_s
        self._limits = limits if limits is not None else ReadinessLimits()
        self._last_beat = clock()
        self._stage: tuple[str, float] | None = None
        self._model_loaded = False
        self._gallery_loaded = False
        self._partitions: frozenset[tuple[str, int]] = frozenset()
        self._blocked_reason: str | None = "starting"
        self._failures: dict[str, tuple[str, float]] = {}
        self._successes: dict[str, float] = {}

    def beat(self) -> None:
        """The loop begins an iteration."""
        with self._lock:
            self._last_beat = self._clock()

    def enter_stage(self, stage: str | None) -> None:
        """The loop enters ``stage`` (``None``: between stages)."""
        with self._lock:
            self._stage = None if stage is None else (stage, self._clock())

    def succeeded(self, dependency: str, call: str | None = None) -> None:
        """A call to ``dependency`` (``milvus``, ``kafka``) succeeded; ``call`` names it."""
        with self._lock:
            now = self._clock()
            self._successes[dependency] = now
            if call is not None:
                self._successes[call] = now

    def failed(self, dependency: str, kind: str) -> None:
        """A call to ``dependency`` failed (``kind``: what went wrong, for the body)."""
        with self._lock:
            self._failures[dependency] = (kind, self._clock())

    def set_loaded(self, *, model: bool, gallery: bool) -> None:
        with self._lock:
            self._model_loaded, self._gallery_loaded = model, gallery

    def set_partitions(self, partitions: frozenset[tuple[str, int]]) -> None:
        with self._lock:
            self._partitions = partitions

    def block(self, reason: str) -> None:
        """Not ready for ``reason`` (backing off, incompatible gallery, shutting down)."""
        with self._lock:
            self._blocked_reason = reason

    def unblock(self) -> None:
        with self._lock:
            self._blocked_reason = None

    def liveness(self) -> tuple[bool, dict[str, object]]:
        with self._lock:
            since = self._clock() - self._last_beat
            return since <= self._stall_after_s, {"seconds_since_loop_beat": round(since, 3)}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Whether the worker is making progress, and the evidence (see the module's doc)."""
        with self._lock:
            now = self._clock()
            limits = self._limits
            since_beat = now - self._last_beat
            stage, in_stage = (None, 0.0)
            if self._stage is not None:
                stage, in_stage = self._stage[0], now - self._stage[1]
            failing = {
                dependency: kind
                for dependency, (kind, at) in self._failures.items()
                if now - at <= limits.failure_memory_s and self._successes.get(dependency, -1) < at
            }
            not_ready = [
                *([] if self._model_loaded else ["model not loaded"]),
                *([] if self._gallery_loaded else ["gallery not loaded"]),
                *([] if self._partitions else ["no partitions assigned"]),
                *([] if self._blocked_reason is None else [self._blocked_reason]),
                *(
                    [f"loop has not turned for {since_beat:.0f} s"]
                    if since_beat > limits.loop_within_s
                    else []
                ),
                *(
                    [f"stage {stage} running for {in_stage:.0f} s"]
                    if stage is not None and in_stage > limits.stage_within_s
                    else []
                ),
                *(f"{dependency} failing ({kind})" for dependency, kind in failing.items()),
            ]
            detail: dict[str, object] = {
                "model_loaded": self._model_loaded,
                "gallery_loaded": self._gallery_loaded,
                "partitions": sorted(f"{t}-{p}" for t, p in self._partitions),
                "blocked": self._blocked_reason,
                "seconds_since_loop_beat": round(since_beat, 3),
                "stage": stage,
                "seconds_in_stage": round(in_stage, 3),
                "seconds_since_search": self._age(now, "search"),
                "seconds_since_commit": self._age(now, "commit"),
                "failing": failing,
                "not_ready_because": not_ready,
            }
            return not not_ready, detail

    def _age(self, now: float, call: str) -> float | None:
        at = self._successes.get(call)
        return None if at is None else round(now - at, 3)
