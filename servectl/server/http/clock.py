"""One timer per connection for its two timeouts: the request head's and keep-alive's.

A timer armed and cancelled per request costs more than the request's own routing, so
the clock is wound to the earlier of two deadlines (loop time; None: not timing) and
moved only when it fires or a deadline comes sooner than the one it is wound for. An
answer or a request head compares one float instead of touching the loop's timers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class ConnectionClock:
    __slots__ = ("_at", "_handle", "_loop", "_on_head_late", "_on_idle", "head_due", "idle_due")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_head_late: Callable[[], None], on_idle: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._on_head_late = on_head_late  # a request head (or an answered body's rest) is late
        self._on_idle = on_idle  # kept alive with nothing asked for too long
        self.head_due: float | None = None
        self.idle_due: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the timer fires (inf: not wound)

    def head_from_now(self, seconds: float) -> None:
        due = self.head_due = self._loop.time() + seconds
        if due < self._at:
            self._wind(due)

    def idle_from_now(self, seconds: float) -> None:
        due = self.idle_due = self._loop.time() + seconds
        if due < self._at:
            self._wind(due)

    def stop(self) -> None:
        self.head_due = self.idle_due = None
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._at = None, math.inf

    def _wind(self, due: float) -> None:
        """Make the timer fire by `due` (it may fire sooner: it then winds itself on)."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(due, self._fire)
        self._at = due

    def _fire(self) -> None:
        self._handle, self._at = None, math.inf
        now = self._loop.time()
        if self.head_due is not None and self.head_due <= now:
            self.head_due = None
            self._on_head_late()
        elif self.idle_due is not None and self.idle_due <= now:
            self.idle_due = None
            self._on_idle()
        for due in (self.head_due, self.idle_due):
            if due is not None and due < self._at:
                self._wind(due)
