"""The connection's one timer for the head and keep-alive deadlines, on a fake loop:
time moves only when the test says, so no test here sleeps."""

from __future__ import annotations

from collections.abc import Callable

from servectl.server.http.clock import ConnectionClock


class Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(when, callback)
        self.handles.append(handle)
        return handle

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while due := [h for h in self.handles if not h.cancelled and h.when <= self.now]:
            handle = min(due, key=lambda h: h.when)
            self.handles.remove(handle)
            handle.callback()

    def armed(self) -> list[float]:
        return [h.when for h in self.handles if not h.cancelled]


def clock() -> tuple[FakeLoop, ConnectionClock, list[str]]:
    loop, fired = FakeLoop(), []
    return loop, ConnectionClock(loop, lambda: fired.append("head"), lambda: fired.append("idle")), fired  # type: ignore[arg-type]


def test_a_late_head_fires_once_at_its_deadline() -> None:
    loop, c, fired = clock()
    c.head_from_now(10)
    loop.advance(9.9)
    assert fired == []
    loop.advance(0.2)
    assert fired == ["head"] and c.head_due is None and loop.armed() == []


def test_a_head_that_arrives_in_time_fires_nothing() -> None:
    loop, c, fired = clock()
    c.head_from_now(10)
    loop.advance(3)
    c.head_due = None  # the head is in (what on_headers_complete does: no timer touched)
    loop.advance(20)
    assert fired == [] and loop.armed() == []


def test_keep_alive_closes_an_idle_connection_and_new_bytes_keep_it() -> None:
    loop, c, fired = clock()
    c.idle_from_now(5)
    loop.advance(4)
    c.idle_due = None  # bytes came: not idle
    c.head_from_now(10)
    loop.advance(5)
    assert fired == []  # the timer fired at 5 s for nothing, and wound itself on to the head's deadline
    assert loop.armed() == [14]
    loop.advance(5)
    assert fired == ["head"]


def test_one_timer_for_many_requests() -> None:
    """Answers on a kept-alive connection move a float, not the loop's timers."""
    loop, c, fired = clock()
    c.idle_from_now(5)
    for _ in range(100):  # a request and its answer every 10 ms
        loop.advance(0.01)
        c.idle_due = None
        c.head_from_now(10)
        c.head_due = None
        c.idle_from_now(5)
    assert len(loop.handles) <= 3 and fired == []
    loop.advance(5)
    assert fired == ["idle"]


def test_stop_disarms() -> None:
    loop, c, fired = clock()
    c.head_from_now(1)
    c.idle_from_now(2)
    c.stop()
    loop.advance(10)
    assert fired == [] and loop.armed() == []
