"""A loop whose time moves only when a test says, and a transport that keeps what is written:
the connection layer's timers (`servectl.server.http.clock`, `.connection`) tested without
sleeping, as uvicorn's own tests do with their mock loop and transport."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Handle:
    """A timer armed on the fake loop (what `call_at` and `call_later` return)."""

    def __init__(self, when: float, callback: Callable[..., None], args: tuple[Any, ...] = ()) -> None:
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Time and timers of a loop, moved only by `advance` (due timers fire in the order of
    their deadlines).

    Tasks (`create_task`) run on the real loop the test runs in (`asyncio.run`): an app's
    task answers while the test awaits, and the answer's timers are this loop's."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> Handle:
        handle = Handle(when, callback, args)
        self.handles.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Handle:
        return self.call_at(self.now + delay, callback, *args)

    def create_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, firing every timer due by then (those a callback arms too)."""
        self.now += seconds
        while due := [h for h in self.handles if not h.cancelled and h.when <= self.now]:
            handle = min(due, key=lambda h: h.when)
            self.handles.remove(handle)
            handle.callback(*handle.args)

    def armed(self) -> list[float]:
        """The deadlines of the timers armed now."""
        return [h.when for h in self.handles if not h.cancelled]


class Transport:
    """A connection's transport that keeps what is written and whether it was closed."""

    def __init__(self) -> None:
        self.written = b""
        self.closing = False
        self.eof_written = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, data: Any) -> None:
        self.written += b"".join(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None:
        pass
