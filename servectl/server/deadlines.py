"""A model request's clock: the deadline (`limits.timeout_s`, from the request's first byte)
while its body is read, while it waits for a worker and while it streams, and the watch for
its client leaving; one timer per request drives it all, armed only for requests that are
not answered within WATCH_AFTER_S (`FirstTicks`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from servectl.outcome import GONE, Failure
from servectl.runtime.scheduler import Pending, Scheduler
from servectl.server.asgi import Receive

WATCH_AFTER_S = 0.02
BODY_LATE = Failure(504, "timeout", "request body not received in time")  # marks the deadline's cancel


class FirstTicks:
    """When each request's first tick (`DeadlineWatch.tick`) is due, WATCH_AFTER_S after it
    started, for all of an endpoint's requests in start order: one timer for the lot instead
    of one per request (arming and cancelling a timer costs ~1.7 us, and most answers come
    before their tick would). A request leaves as soon as it is answered: nothing answered
    is kept alive until its tick."""

    def __init__(self, tick: Callable[[Pending, Receive], None]) -> None:
        self.tick = tick
        self.due: dict[int, tuple[float, Pending, Receive]] = {}  # by key, in start order
        self.timer: asyncio.TimerHandle | None = None

    def add(self, pending: Pending, receive: Receive) -> None:
        self.due[pending.key] = (time.perf_counter() + WATCH_AFTER_S, pending, receive)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._fire)

    def settle(self, pending: Pending) -> None:
        """The endpoint is done with the request: no tick, deadline or watch for it any more."""
        self.due.pop(pending.key, None)
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.watcher is not None:
            pending.watcher.cancel()

    def _fire(self) -> None:
        self.timer = None
        now = time.perf_counter()
        due = self.due
        while due:
            when, pending, receive = due[next(iter(due))]
            if when > now:
                self.timer = asyncio.get_running_loop().call_later(when - now, self._fire)
                return
            del due[pending.key]
            self.tick(pending, receive)


class DeadlineWatch:
    """The deadline and the disconnect watch of one endpoint's requests."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.timeout_s = 0.0  # the model's limits.timeout_s (again after a reload)

    def tick(self, pending: Pending, receive: Receive) -> None:
        """The request's one timer. While its body is read: the body's deadline. Once it
        waits for a worker (WATCH_AFTER_S after its start, so quick answers never pay for
        it): watch for the client leaving, and expire at the deadline. The deadline and
        the watch stay armed while a stream is sent."""
        loop = asyncio.get_running_loop()
        remaining = pending.deadline - time.perf_counter()
        if pending.reader is not None:  # still reading the body
            if remaining > 0:
                pending.timer = loop.call_later(remaining, self.tick, pending, receive)
                return
            pending.future.set_result(BODY_LATE)  # marks the cancel below as the deadline's
            pending.reader.cancel()
            return
        if pending.future.done() and pending.stream is None:
            return
        if remaining <= 0:
            self.expire(pending)
            return
        pending.timer = loop.call_later(remaining, self.expire, pending)
        if pending.watcher is None:
            pending.watcher = loop.create_task(self.until_disconnect(pending, receive))

    def expire(self, pending: Pending) -> None:
        msg = f"not answered within limits.timeout_s={self.timeout_s:g}s"
        if pending.stream is not None:  # mid-stream: stop the generation, end with an error event
            self.scheduler.cancel(pending)
            pending.stream.put_nowait(Failure(504, "timeout", msg + " (was streaming)"))
            return
        if pending.future.done():
            return
        queued = self.scheduler.drop(pending, "timeout")
        if not queued:  # running: stop a generation the worker may have started
            self.scheduler.cancel(pending)
        pending.future.set_result(Failure(504, "timeout", f"{msg} (was {'queued' if queued else 'running'})"))

    async def until_disconnect(self, pending: Pending, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if pending.stream is not None:  # mid-stream: stop generating for this client
            self.scheduler.cancel(pending)
            pending.stream.put_nowait(GONE)
        elif not pending.future.done():
            if not self.scheduler.drop(pending, "disconnected"):
                self.scheduler.cancel(pending)  # running: stop it, streamed or not
            pending.future.set_result(GONE)
