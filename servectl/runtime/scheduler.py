"""The scheduler: a bounded queue of requests and the dynamic batcher that feeds workers.

Batching policy: an idle worker takes what is queued at once, so a lone request never
waits. Batches form from what queues while workers are busy. `max_wait_ms` only holds a
partial batch back while other workers are busy (the server is under load), and never
longer than that bound counted from the oldest queued request.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from servectl.errors import error_body
from servectl.metrics import Metrics
from servectl.runtime import protocol as p
from servectl.spec import BatchingSpec

Answer = tuple[int, bytes]  # HTTP status, body
STREAMING: Answer = (0, b"")  # the future's answer once a stream's first chunk arrives


class QueueFull(Exception):
    """More requests are waiting than `limits.max_queue` allows."""


class NoWorkers(Exception):
    """Every worker slot has failed for good: nothing will ever take the request."""


class Pending:
    """One request from the moment it is queued until it is answered."""

    __slots__ = ("body", "future", "key", "queued_at", "request_id", "route", "stream", "timer", "watcher", "worker")

    def __init__(
        self, key: int, request_id: str, body: bytes, future: asyncio.Future[Answer], route: str = "predict"
    ) -> None:
        self.key = key
        self.request_id = request_id
        self.body = body
        self.route = route
        self.future = future
        self.queued_at = time.perf_counter()
        self.timer: asyncio.TimerHandle | None = None  # the deadline, or when to start watching
        self.watcher: asyncio.Task[None] | None = None  # waits for the client to disconnect
        self.worker: WorkerPort | None = None  # who holds it, once sent
        # streamed chunks (bytes), then one final Answer; created with the first chunk
        self.stream: asyncio.Queue[bytes | Answer] | None = None

    def finish(self, answer: Answer) -> None:
        """Answer the request: its future, or the end of its stream."""
        if self.stream is not None:
            self.stream.put_nowait(answer)
        elif not self.future.done():
            self.future.set_result(answer)


class WorkerPort(Protocol):
    """What the scheduler needs from a worker: the supervisor's handle implements it."""

    index: int
    inflight: dict[int, Pending]

    @property
    def idle(self) -> bool: ...

    def send_batch(self, batch_id: int, items: list[p.Item]) -> None: ...

    def send_cancel(self, keys: list[int]) -> None: ...


def batch_delay(queued: int, oldest_wait: float, busy_workers: int, spec: BatchingSpec) -> float:
    """Seconds to hold a partial batch before giving it to an idle worker (0: now)."""
    max_wait = spec.max_wait_ms / 1000.0
    if queued >= spec.max_batch_size or busy_workers == 0 or max_wait == 0:
        return 0.0
    return max(0.0, max_wait - oldest_wait)


class Scheduler:
    """Queues requests, forms batches and routes them to the least-loaded ready worker."""

    def __init__(self, batching: BatchingSpec, max_queue: int, metrics: Metrics) -> None:
        self.batching = batching
        self.max_queue = max_queue
        self.metrics = metrics
        self.queue: OrderedDict[int, Pending] = OrderedDict()
        self.workers: list[WorkerPort] = []
        self.no_workers_reason: str | None = None
        self._keys = itertools.count()
        self._batch_ids = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.batches_sent = 0
        self.items_sent = 0

    # --- requests -----------------------------------------------------------------

    def submit(self, request_id: str, body: bytes, route: str = "predict") -> Pending:
        if self.no_workers_reason is not None:
            raise NoWorkers(self.no_workers_reason)
        if len(self.queue) >= self.max_queue:
            raise QueueFull
        loop = asyncio.get_running_loop()
        pending = Pending(next(self._keys), request_id, body, loop.create_future(), route)
        self.queue[pending.key] = pending
        self.dispatch()
        return pending

    def drop(self, pending: Pending, reason: str) -> bool:
        """Forget a request's queued work; True when it had not reached a worker yet."""
        if self.queue.pop(pending.key, None) is None:
            return False
        self.metrics.dropped.labels(reason).inc()
        return True

    # --- workers ------------------------------------------------------------------

    def add_worker(self, worker: WorkerPort) -> None:
        self.workers.append(worker)
        self.dispatch()

    def remove_worker(self, worker: WorkerPort, answer: Callable[[Pending], Answer]) -> None:
        """A worker is gone: answer everything it held, so nothing hangs."""
        if worker in self.workers:
            self.workers.remove(worker)
        held, worker.inflight = worker.inflight, {}
        for pending in held.values():
            pending.finish(answer(pending))

    def fail_all_queued(self, reason: str) -> None:
        """No worker will ever come: answer the queue with 503 and refuse new work."""
        self.no_workers_reason = reason
        while self.queue:
            _, pending = self.queue.popitem(last=False)
            if not pending.future.done():
                pending.future.set_result((503, error_body(reason, pending.request_id, "unavailable")))

    def on_results(self, worker: WorkerPort, results: list[p.Result], predict_s: float | None) -> None:
        for key, status, body in results:
            pending = worker.inflight.pop(key, None)
            if pending is not None:
                pending.finish((status, body))
        if predict_s is not None:  # the batch is complete
            self.metrics.predict_time.observe(predict_s)
        self.dispatch()

    def on_chunk(self, worker: WorkerPort, key: int, body: bytes) -> None:
        pending = worker.inflight.get(key)
        if pending is None:
            return
        if pending.stream is None:
            pending.stream = asyncio.Queue()
            self.metrics.first_chunk.observe(time.perf_counter() - pending.queued_at)
            if not pending.future.done():
                pending.future.set_result(STREAMING)
        self.metrics.chunks += 1
        pending.stream.put_nowait(body)

    def cancel_stream(self, pending: Pending) -> None:
        """Tell the worker streaming to a request to stop: its client is gone or late."""
        if pending.worker is not None and pending.key in pending.worker.inflight:
            pending.worker.send_cancel([pending.key])

    # --- batching -----------------------------------------------------------------

    def dispatch(self) -> None:
        """Give queued work to idle workers, least loaded first, as the policy allows."""
        while self.queue:
            idle = [w for w in self.workers if w.idle]
            if not idle:
                return
            now = time.perf_counter()
            oldest = next(iter(self.queue.values()))
            busy = len(self.workers) - len(idle)
            delay = batch_delay(len(self.queue), now - oldest.queued_at, busy, self.batching)
            if delay > 0:
                self._arm_timer(delay)
                return
            self._send(idle[0], now)

    def _arm_timer(self, delay: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.dispatch()

    def _send(self, worker: WorkerPort, now: float) -> None:
        size = min(self.batching.max_batch_size, len(self.queue))
        items: list[p.Item] = []
        for _ in range(size):
            _, pending = self.queue.popitem(last=False)
            worker.inflight[pending.key] = pending
            pending.worker = worker
            items.append((pending.key, pending.request_id, pending.body, pending.route))
            self.metrics.queue_time.observe(now - pending.queued_at)
        self.metrics.batch_size.observe(size)
        self.batches_sent += 1
        self.items_sent += size
        worker.send_batch(next(self._batch_ids), items)
