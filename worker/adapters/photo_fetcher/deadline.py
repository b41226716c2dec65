"""An overall deadline for one HTTP fetch.

A socket timeout bounds each read, not the fetch: a host that sends one byte a second never
trips it, and held a batch for 400 s. :class:`FetchDeadline` arms an alarm for the whole fetch
(:mod:`~worker.adapters.photo_fetcher.alarms`: one thread for all fetches); when it rings it
shuts the fetch's socket down, which wakes whatever read is blocked on it (in the TLS
handshake, the headers or the body) with an end of file. The reader then sees
:attr:`FetchDeadline.expired` and refuses the fetch. Name resolution is the one step it cannot
cut short (the resolver's own timeouts bound it). A connection whose fetch ran out of time is
never kept for another fetch: its socket may have been shut down.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from worker.adapters.photo_fetcher.alarms import ALARMS, Alarm

_SocketSource = Callable[[], socket.socket | None]


class FetchDeadline:
    """The time budget of one fetch; use as a context manager around the whole fetch.

    Attributes:
        seconds: The budget.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sources: list[_SocketSource] = []
        self._fired = False
        self._alarm: Alarm | None = None

    def __enter__(self) -> FetchDeadline:
        self._alarm = ALARMS.arm(self._ends, self._fire)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._alarm is not None:
            self._alarm.disarm()

    @property
    def expired(self) -> bool:
        """Whether the budget is spent (checked between reads, and after a cut connection)."""
        return self._fired or time.monotonic() >= self._ends

    def watch(self, source: _SocketSource) -> None:
        """Shut down the socket that ``source`` returns when the deadline fires (or now if it has).

        Args:
            source: Returns the socket to cut, or ``None``; called when the deadline fires, so
                that it can name a socket that is replaced meanwhile (TLS wraps the TCP socket).
        """
        with self._lock:
            self._sources.append(source)
            fired = self._fired
        if fired:
            _shut_down(source())

    def connect_watched(self, connection: http.client.HTTPConnection) -> None:
        """Connect ``connection`` if it is not, and cut it when the deadline fires.

        Whatever socket the connection holds when the deadline fires (the TCP one during the TLS
        handshake), then the connected one itself: http.client takes it off the connection when
        a response asks to close, while the body is still to come.
        """
        self.watch(lambda: connection.sock)
        if connection.sock is None:
            connection.connect()
        connected = connection.sock
        self.watch(lambda: connected)

    def cut(self) -> None:
        """Spend the budget now: the fetch's socket is shut down and the fetch fails."""
        self._fire()

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            sources = list(self._sources)
        for source in sources:
            _shut_down(source())


def _shut_down(sock: socket.socket | None) -> None:
    if sock is None:
        return
    # The plain socket's shutdown also for TLS: SSLSocket.shutdown would drop the TLS state under
    # a read in progress in another thread. OSError: already closed, the fetch is over.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
