"""The scheduler: a bounded queue of requests and the dynamic batcher that feeds workers.

Batching policy: an idle worker takes what is queued at once, so a lone request never
waits. Batches form from what queues while workers are busy. `max_wait_ms` only holds a
partial batch back while other workers are busy (the server is under load), and never
longer than that bound counted from the oldest queued request.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from servectl.metrics import ModelMetrics
from servectl.outcome import ENDED, GONE, STREAMING, Answer, Ended, Failure, Gone, Outcome
from servectl.spec import BatchingSpec
from servectl.worker.messages import ORIGIN_SHIFT, Result, Stages

STREAM_BUFFER_BYTES = 16 * 2**20  # streamed bytes held for one slow client before its generation is stopped
CUT_AFTER_S = 1.0  # a stream's client past its deadline (or the drain's) has this long to take the error event
# a worker's Ended() and Gone() decode as new instances: requests are answered with the singletons
_SINGLETONS: dict[type, Answer] = {Ended: ENDED, Gone: GONE}


class QueueFull(Exception):
    """More requests are waiting than `limits.max_queue` allows."""


class NoWorkers(Exception):
    """Nothing will take the request: every worker slot has given up, or the server is stopping."""

    def __init__(self, message: str, kind: str = "unavailable") -> None:
        super().__init__(message)
        self.kind = kind


class Pending:
    """One request from the moment it is queued until it is answered."""

    __slots__ = (
        "body",
        "buffered",
        "completion_tokens",
        "deadline",
        "done_at",
        "future",
        "hang_at",
        "json_length",
        "key",
        "prompt_tokens",
        "queued_at",
        "reader",
        "request_id",
        "route",
        "sending",
        "sent_at",
        "stages",
        "stream",
        "timer",
        "watcher",
        "worker",
    )

    def __init__(
        self,
        key: int,
        request_id: str,
        body: bytes,
        future: asyncio.Future[Outcome],
        route: str = "predict",
        deadline: float = math.inf,
    ) -> None:
        self.key = key
        self.request_id = request_id
        self.body = body
        self.route = route
        self.future = future
        self.queued_at = time.perf_counter()
        self.deadline = deadline  # perf_counter time of its 504
        self.hang_at = math.inf  # perf_counter time past which its worker counts as hung
        self.json_length: int | None = None  # a framed body's JSON part (V2's binary data)
        self.sent_at = 0.0  # perf_counter time a worker got it (traces)
        self.done_at = 0.0  # perf_counter time its answer (or its stream's end) came
        self.stages: Stages | None = None  # its batch's time in the worker by stage (traces)
        self.prompt_tokens = 0  # as its worker counted them (stats, rate limits)
        self.completion_tokens = 0
        self.buffered = 0  # bytes of streamed chunks not yet handed to the client's connection
        self.sending: asyncio.Timeout | None = None  # bounds a stream's write to a slow client
        self.reader: asyncio.Task[Any] | None = None  # the task reading its body, until it is read
        self.timer: asyncio.TimerHandle | None = None  # the deadline, or when to start watching
        self.watcher: asyncio.Task[None] | None = None  # waits for the client to disconnect
        self.worker: WorkerPort | None = None  # who holds it, once sent
        # streamed chunks (bytes), then one final Answer; created with the first chunk (the
        # future is then STREAMING); a stream with no chunk at all ends its future with ENDED
        self.stream: asyncio.Queue[bytes | Answer] | None = None

    def finish(self, answer: Answer) -> None:
        """Answer the request: its future, or the end of its stream."""
        self.done_at = time.perf_counter()
        if self.stream is not None:
            self.stream.put_nowait(answer)
        elif not self.future.done():
            self.future.set_result(answer)


class WorkerPort(Protocol):
    """What the scheduler needs from a worker: the supervisor's handle implements it."""

    index: int
    inflight: dict[int, Pending]

    @property
    def room(self) -> int:
        """How many more requests it takes now (0: none)."""

    @property
    def waiting_room(self) -> int:
        """How many it takes as a batch waiting behind the one it computes (0: none)."""

    def send_batch(self, batch_id: int, batch: list[Pending]) -> None: ...

    def send_cancel(self, keys: list[int]) -> None: ...


def batch_delay(queued: int, oldest_wait: float, busy_workers: int, spec: BatchingSpec) -> float:
    """Seconds to hold a partial batch before giving it to an idle worker (0: now)."""
    max_wait = spec.max_wait_ms / 1000.0
    if queued >= spec.max_batch_size or busy_workers == 0 or max_wait == 0:
        return 0.0
    return max(0.0, max_wait - oldest_wait)


class Scheduler:
    """Queues requests, forms batches and routes them to the least-loaded ready worker."""

    def __init__(self, batching: BatchingSpec, max_queue: int, metrics: ModelMetrics, origin: int = 0) -> None:
        self.batching = batching
        self.max_queue = max_queue
        self.metrics = metrics
        self.queue: OrderedDict[int, Pending] = OrderedDict()
        self.workers: list[WorkerPort] = []
        self.refusal: NoWorkers | None = None  # set while nothing can take new requests
        # keys and batch ids carry this API process's index (server.api_processes): workers
        # several API processes reach answer each one on its own connection
        self._keys = itertools.count(origin << ORIGIN_SHIFT)
        self._batch_ids = itertools.count(origin << ORIGIN_SHIFT)
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it serves on, once it has
        self.batches_sent = 0
        self.items_sent = 0

    # --- requests -----------------------------------------------------------------

    def open(self, request_id: str, route: str = "predict", deadline: float = math.inf) -> Pending:
        """A request that has started (its body may still be arriving), not queued yet."""
        loop = self._loop
        if loop is None or loop.is_closed():  # asking for the running loop asks the OS for the pid
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        return Pending(next(self._keys), request_id, b"", future, route, deadline)

    def enqueue(self, pending: Pending, body: bytes) -> None:
        """Queue a request with its body for the next idle worker."""
        if self.refusal is not None:
            raise self.refusal
        if len(self.queue) >= self.max_queue:
            raise QueueFull
        pending.body = body
        pending.queued_at = time.perf_counter()
        self.queue[pending.key] = pending
        self.dispatch()

    def submit(self, request_id: str, body: bytes, route: str = "predict", deadline: float = math.inf) -> Pending:
        """open + enqueue, for callers that have the whole body."""
        pending = self.open(request_id, route, deadline)
        self.enqueue(pending, body)
        return pending

    def drop(self, pending: Pending, reason: str) -> bool:
        """Forget a request's queued work; True when it had not reached a worker yet."""
        if self.queue.pop(pending.key, None) is None:
            return False
        self.metrics.drop(reason)
        return True

    # --- workers ------------------------------------------------------------------

    def add_worker(self, worker: WorkerPort) -> None:
        self.workers.append(worker)
        self.dispatch()

    def retire_worker(self, worker: WorkerPort) -> None:
        """A worker takes no more batches; what it holds is still answered by it."""
        if worker in self.workers:
            self.workers.remove(worker)

    def remove_worker(self, worker: WorkerPort, answer: Callable[[Pending], Answer]) -> None:
        """A worker is gone: answer everything it held, so nothing hangs."""
        if worker in self.workers:
            self.workers.remove(worker)
        held, worker.inflight = worker.inflight, {}
        for pending in held.values():
            pending.finish(answer(pending))

    def refuse(self, reason: str, kind: str = "unavailable") -> None:
        """No worker will take work for now: answer the queue with 503 and refuse new requests."""
        self.refusal = NoWorkers(reason, kind)
        while self.queue:
            _, pending = self.queue.popitem(last=False)
            pending.finish(Failure(503, kind, reason))

    def accept(self) -> None:
        """A worker is back after every slot had given up: take requests again."""
        if self.refusal is not None and self.refusal.kind == "unavailable":
            self.refusal = None

    def abandon(self, reason: str, kind: str) -> None:
        """Answer every request still open, queued or held by a worker (the drain ran out):
        each gets a 503; a stream gets it as its final error event, and a stream stuck
        writing to a slow client is cut now."""
        self.refuse(reason, kind)
        for worker in self.workers:
            if worker.inflight:
                worker.send_cancel(list(worker.inflight))  # stop generations: nobody waits for them
            for pending in list(worker.inflight.values()):
                pending.finish(Failure(503, kind, reason))
                if pending.sending is not None:  # a slow client gets CUT_AFTER_S more to take it
                    when = asyncio.get_running_loop().time() + CUT_AFTER_S
                    pending.sending.reschedule(min(when, pending.sending.when() or when))

    def on_results(
        self, worker: WorkerPort, results: list[Result], predict_s: float | None, stages: Stages | None = None
    ) -> None:
        for result in results:
            pending = worker.inflight.pop(result.key, None)
            if pending is not None:
                pending.stages = stages
                outcome = result.outcome
                pending.finish(_SINGLETONS.get(type(outcome), outcome))
        if predict_s is not None:  # the batch is complete
            self.metrics.predict_time.observe(predict_s)
        self.dispatch()

    def on_tokens(self, worker: WorkerPort, key: int, prompt: int, completion: int) -> None:
        self.metrics.tokens += completion
        pending = worker.inflight.get(key)
        if pending is not None:
            pending.prompt_tokens += prompt
            pending.completion_tokens += completion

    def on_chunk(self, worker: WorkerPort, key: int, body: bytes) -> None:
        pending = worker.inflight.get(key)
        if pending is None or pending.buffered < 0:  # unknown, or already cut off
            return
        if pending.stream is None:
            pending.stream = asyncio.Queue()
            self.metrics.first_chunk.observe(time.perf_counter() - pending.queued_at)
            if not pending.future.done():
                pending.future.set_result(STREAMING)
        self.metrics.chunks += 1
        pending.buffered += len(body)
        pending.stream.put_nowait(body)
        if pending.buffered > STREAM_BUFFER_BYTES:
            self._cut_slow_reader(pending)

    def _cut_slow_reader(self, pending: Pending) -> None:
        """A client reads a stream slower than it is generated: stop generating for it, so the
        API process holds at most STREAM_BUFFER_BYTES for it; what is buffered is still sent
        until its deadline, then the error event."""
        assert pending.stream is not None
        self.cancel(pending)
        pending.buffered = -1
        msg = (
            f"the client read this stream too slowly: over {STREAM_BUFFER_BYTES // 2**20} MiB waited to be sent; "
            "generation stopped"
        )
        pending.stream.put_nowait(Failure(503, "slow_reader", msg))
        self.metrics.drop("slow_reader")

    def cancel(self, pending: Pending) -> None:
        """Tell the worker holding a request to stop working on it (client gone, deadline passed),
        whether or not it has streamed anything yet."""
        if pending.worker is not None and pending.key in pending.worker.inflight:
            pending.worker.send_cancel([pending.key])

    # --- batching -----------------------------------------------------------------

    def dispatch(self) -> None:
        """Give queued work to idle workers, least loaded first, as the policy allows."""
        while self.queue:
            open_ = [w for w in self.workers if w.room > 0]
            if open_:
                now = time.perf_counter()
                oldest = next(iter(self.queue.values()))
                busy = len(self.workers) - len(open_)
                delay = batch_delay(len(self.queue), now - oldest.queued_at, busy, self.batching)
                if delay > 0:
                    self._arm_timer(delay)
                    return
                chosen = max(open_, key=lambda w: w.room)
                self._send(chosen, now, chosen.room)
                continue
            # every worker is busy (the common case under load: checked first, cheaply): a full
            # batch may wait behind one's running batch (a partial one would only shrink the
            # batches: it goes to the first worker that is done)
            if len(self.queue) < self.batching.max_batch_size:
                return
            behind = [w for w in self.workers if w.waiting_room > 0]
            if not behind:
                return
            chosen = min(behind, key=lambda w: len(w.inflight))
            self._send(chosen, time.perf_counter(), chosen.waiting_room)

    def _arm_timer(self, delay: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.dispatch()

    def _send(self, worker: WorkerPort, now: float, room: int) -> None:
        size = min(self.batching.max_batch_size, room, len(self.queue))
        batch: list[Pending] = []
        for _ in range(size):
            _, pending = self.queue.popitem(last=False)
            worker.inflight[pending.key] = pending
            pending.worker = worker
            pending.sent_at = now
            batch.append(pending)
            self.metrics.queue_time.observe(now - pending.queued_at)
        self.metrics.batch_size.observe(size)
        self.batches_sent += 1
        self.items_sent += size
        worker.send_batch(next(self._batch_ids), batch)
