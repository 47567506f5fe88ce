"""The API process's view of one worker: its run (process or thread), what it holds, whether
it is ready, hung or retiring, and its hang watchdog timer."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from servectl.outcome import Failure
from servectl.runtime.launch import WorkerRun
from servectl.runtime.scheduler import Pending, Scheduler
from servectl.worker.devices import WorkerSlot
from servectl.worker.messages import Batch, Cancel, Chunk, FromWorker, Request, Results, Tokens


class WorkerHandle:
    """The API process's view of one worker: `run` is the started worker (process or thread)."""

    def __init__(self, slot: WorkerSlot, hang_grace_s: float, on_watchdog: Callable[[WorkerHandle], None]) -> None:
        self.slot = slot
        self.index = slot.index
        self.run: WorkerRun | None = None  # set once launched
        self.exited = False
        self.drained = False
        self.gone = False
        self.ready = False
        self.hung = False
        self.retiring = False  # replaced by a reload: takes no batch, stops once it holds none
        self.capacity = 0  # requests it takes while busy (continuous generation), set when ready; 0: one batch
        self.pipelined = False  # a second batch may wait in its inbox while it computes one (set when ready)
        self.batches = 0  # batches sent and not complete
        self.inflight: dict[int, Pending] = {}
        self.started_at = time.monotonic()
        self.hang_grace_s = hang_grace_s
        self.watchdog: asyncio.TimerHandle | None = None
        self._on_watchdog = on_watchdog

    @property
    def room(self) -> int:
        """How many more requests it takes now: a batch's worth when it holds none, or up to
        its capacity while it generates continuously."""
        if not self.ready:
            return 0
        if self.capacity:
            return max(self.capacity - len(self.inflight), 0)
        return 0 if self.inflight else 1 << 30

    @property
    def waiting_room(self) -> int:
        """Requests it takes as a batch waiting behind the one it computes (pipelining)."""
        return 1 << 30 if self.ready and self.pipelined and self.batches == 1 and self.inflight else 0

    def send_batch(self, batch_id: int, batch: list[Pending]) -> None:
        assert self.run is not None  # ready implies launched
        hang_at = max(pending.deadline for pending in batch) + self.hang_grace_s
        items: list[Request] = []
        for pending in batch:
            pending.hang_at = hang_at
            items.append(Request(pending.key, pending.request_id, pending.body, pending.route, pending.json_length))
        self.run.send(Batch(batch_id, items))
        self.batches += 1
        if self.watchdog is None:
            self.arm_watchdog(hang_at)

    def arm_watchdog(self, at: float) -> None:
        """Check for a hung batch at perf_counter time `at` (one timer per worker, re-armed
        from its own callback: nothing per request)."""
        if at != math.inf:
            delay = max(at - time.perf_counter(), 0.0)
            self.watchdog = asyncio.get_running_loop().call_later(delay, self._on_watchdog, self)

    def hung_now(self) -> bool:
        """The watchdog fired: True when a batch it holds outlived its deadline by the
        grace; otherwise the timer is armed again for the earliest one still running."""
        self.watchdog = None
        if self.gone or not self.inflight:
            return False
        due = min(pending.hang_at for pending in self.inflight.values())
        if due > time.perf_counter():
            self.arm_watchdog(due)
            return False
        return True

    def stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    @property
    def pid(self) -> int | None:
        return self.run.pid if self.run is not None else None

    def kill(self) -> None:
        """End the worker and everything it started."""
        if self.run is not None:
            self.run.kill()

    def send_cancel(self, keys: list[int]) -> None:
        if self.run is not None:
            self.run.send(Cancel(keys))


def deliver(scheduler: Scheduler, worker: WorkerHandle, msg: FromWorker) -> bool:
    """Hand a worker's answers (chunks, token counts, results) to the scheduler; False for
    what a worker says about itself (Ready, SetupFailed)."""
    match msg:
        case Chunk(key, body):
            scheduler.on_chunk(worker, key, body)
        case Tokens(key, prompt, completion):
            scheduler.on_tokens(worker, key, prompt, completion)
        case Results(_, results, predict_s, stages):
            if predict_s is not None:
                worker.batches = max(0, worker.batches - 1)
            scheduler.on_results(worker, results, predict_s, stages)
            if not worker.inflight:
                worker.stop_watchdog()
        case _:
            return False
    return True


def answer_lost(pending: Pending) -> Failure:
    """The answer of a request whose worker ended before answering it."""
    worker = pending.worker
    if isinstance(worker, WorkerHandle) and worker.hung:
        msg = "the inference worker holding this request hung and was replaced; it was not completed"
        return Failure(503, "worker_hung", msg)
    msg = "the inference worker holding this request crashed; it was not completed"
    return Failure(503, "worker_crashed", msg)
