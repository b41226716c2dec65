"""The alarms of the fetches: one thread rings them in time order; a disarmed one never rings."""

from __future__ import annotations

import gc
import socket
import threading
import time
import weakref

import pytest

from worker.adapters.photo_fetcher.alarms import Alarms
from worker.adapters.photo_fetcher.deadline import FetchDeadline


def _ringing(alarms: Alarms, rung: list[str], name: str, in_s: float) -> None:
    alarms.arm(time.monotonic() + in_s, lambda: rung.append(name))


def _wait_for(condition: object, timeout_s: float = 5.0) -> None:
    ends = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < ends:  # type: ignore[operator]
        time.sleep(0.005)


def test_alarms_ring_in_time_order_whatever_order_they_were_armed_in() -> None:
    alarms, rung = Alarms(), []
    _ringing(alarms, rung, "third", 0.3)
    _ringing(alarms, rung, "first", 0.05)  # earlier than the one the thread sleeps for
    _ringing(alarms, rung, "second", 0.15)

    _wait_for(lambda: len(rung) == 3)

    assert rung == ["first", "second", "third"]


def test_an_alarm_rings_when_it_is_due_not_before() -> None:
    alarms, rung = Alarms(), []
    armed = time.monotonic()
    alarms.arm(armed + 0.2, lambda: rung.append(time.monotonic() - armed))

    _wait_for(lambda: rung)

    assert 0.2 <= rung[0] < 1.0


def test_a_disarmed_alarm_never_rings_and_leaves_the_heap() -> None:
    alarms, rung = Alarms(), []
    alarms.arm(time.monotonic() + 0.05, lambda: rung.append("disarmed")).disarm()
    _ringing(alarms, rung, "armed", 0.1)

    _wait_for(lambda: rung)
    time.sleep(0.1)

    assert rung == ["armed"]
    assert alarms.pending() == 0


def test_a_disarmed_alarm_lets_go_of_what_its_action_holds_at_once() -> None:
    class Fetch:
        def fire(self) -> None:
            """What the alarm would do."""

    fetch = Fetch()
    alarm = Alarms().arm(time.monotonic() + 60.0, fetch.fire)
    held = weakref.ref(fetch)
    del fetch

    alarm.disarm()
    gc.collect()

    assert held() is None


def test_an_alarm_that_fails_does_not_stop_the_later_ones() -> None:
    alarms, rung = Alarms(), []

    def fail() -> None:
        raise RuntimeError("an alarm's action failed")

    alarms.arm(time.monotonic() + 0.02, fail)
    _ringing(alarms, rung, "later", 0.08)

    _wait_for(lambda: rung)

    assert rung == ["later"]


def test_fetches_share_one_alarm_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_timer(*_: object, **__: object) -> None:
        raise AssertionError("a thread a fetch: what the alarms replace")

    def ringers() -> set[threading.Thread]:
        return {thread for thread in threading.enumerate() if thread.name == "fetch-alarms"}

    before = ringers()
    monkeypatch.setattr(threading, "Timer", no_timer)
    for _ in range(50):
        with FetchDeadline(5.0) as deadline:
            assert not deadline.expired

    assert len(ringers() - before) <= 1  # the process's alarms' thread, if no fetch started it yet


def test_a_deadline_that_comes_due_shuts_down_the_socket_it_watches() -> None:
    ours, theirs = socket.socketpair()
    started = time.monotonic()
    with FetchDeadline(0.2) as deadline:
        deadline.watch(lambda: ours)
        ours.settimeout(5.0)
        received = ours.recv(1)  # blocks until the alarm shuts the socket down: end of file
    assert received == b""
    assert deadline.expired
    assert 0.2 <= time.monotonic() - started < 2.0
    ours.close()
    theirs.close()
