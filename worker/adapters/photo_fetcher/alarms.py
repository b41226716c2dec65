"""One thread that rings the alarms of every fetch in progress.

A :class:`threading.Timer` a fetch starts and ends an OS thread each time: ~90 us of CPU, a sixth
of what a kept-connection fetch of a 1.4 MB photo costs otherwise. :class:`Alarms` keeps the
fetches' alarms in a heap, and one daemon thread sleeps until the earliest is due. A fetch that
ends first disarms its alarm (a flag: the heap keeps it until it comes up, then drops it
unrung), so arming and disarming cost a heap push and an assignment; the thread wakes about
once a budget while fetches run, not once a fetch.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Alarm:
    """One armed alarm: it rings (calls its action once, in the alarms' thread) unless disarmed."""

    __slots__ = ("action", "armed")

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.armed = True

    def disarm(self) -> None:
        """Do not ring (if it has not yet); the action, and what it holds (the fetch's sockets),
        is let go at once rather than when the alarm comes up."""
        self.armed = False
        self.action = _nothing


def _nothing() -> None:
    """What a disarmed alarm would do."""


class Alarms:
    """Alarms due at monotonic times, rung by one daemon thread started with the first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, due: float, action: Callable[[], None]) -> Alarm:
        """Ring ``action`` at monotonic time ``due``; returns the alarm (to disarm it)."""
        alarm = Alarm(action)
        with self._changed:
            heapq.heappush(self._heap, (due, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._ring, name="fetch-alarms", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is alarm:  # earlier than the one the thread sleeps for
                self._changed.notify()
        return alarm

    def pending(self) -> int:
        """Alarms in the heap, disarmed ones included until they come up."""
        with self._changed:
            return len(self._heap)

    def forget_thread(self) -> None:
        """After a fork: the child has no alarms' thread; the next alarm starts one."""
        self._changed = threading.Condition()
        self._heap = []
        self._thread = None

    def _ring(self) -> None:
        while True:
            with self._changed:
                while True:
                    while self._heap and not self._heap[0][2].armed:
                        heapq.heappop(self._heap)
                    wait = self._heap[0][0] - self._clock() if self._heap else None
                    if wait is not None and wait <= 0:
                        alarm = heapq.heappop(self._heap)[2]
                        break
                    self._changed.wait(wait)
            if alarm.armed:
                alarm.armed = False
                try:
                    alarm.action()
                except Exception:  # the thread rings every later alarm too: it must live on
                    logger.exception("a fetch's alarm failed")


#: The alarms of this process's fetches.
ALARMS = Alarms()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=ALARMS.forget_thread)
