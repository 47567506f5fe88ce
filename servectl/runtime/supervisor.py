"""The supervisor: spawns one worker process per slot, watches them, restarts the fallen.

Workers are watched without threads or polling: each worker's pipe is an asyncio protocol
(`transport.WorkerChannel`), and its process sentinel (readable once the process has
exited) is watched with `add_reader` (see `launch.ProcessLauncher`; tests launch workers
as threads instead, `inmemory.ThreadLauncher`). A worker counts as gone once it has exited
and its pipe is drained, so answers it sent just before dying still reach their clients.

A watchdog timer per worker replaces a worker whose batch is still running
`supervisor.hang_grace_s` after the deadline of the batch's newest request. Each worker
runs in a process group of its own, and the whole group is ended with it. A slot that gave
up (too many restarts in `restart_window_s`) is tried again once that window has passed.

A reload rolls the workers to a new version of the model's spec, one at a time: a new
worker runs setup while the old ones serve; once it is ready it takes batches and an old
worker stops taking them, finishes what it holds and stops. The first new worker is the
canary: if its setup fails, nothing changed.

On stop, each worker is sent Stop (workers ignore SIGTERM: Stop is their "terminate"); one
still running `STOP_GRACE_S` after the drain ran out (after Stop, when there was no drain) is
killed with its process group: every request was answered by then, and nobody waits for what
it computes. The server exits within limits.drain_s + 2 s of SIGTERM.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from servectl.handler import HandlerInfo
from servectl.metrics import ModelMetrics
from servectl.runtime.handle import WorkerHandle, answer_lost, deliver
from servectl.runtime.launch import WorkerEvents, WorkerLauncher
from servectl.runtime.restarts import RestartPolicy
from servectl.runtime.rollout import ReloadFailed, RollingReload
from servectl.runtime.scheduler import Scheduler
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot
from servectl.worker.messages import FromWorker, Ready, Results, SetupFailed, Stop

log = logging.getLogger("servectl.supervisor")

STOP_GRACE_S = 1.0  # how long past the drain's end a worker may take to exit after Stop
STOP_LATE_S = 0.25  # a worker's least time to take its Stop when the stop itself comes later than that


class _Prefixed(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Starts each line with the model's name (a server of several models)."""

    def process(self, msg: str, kwargs: Any) -> tuple[str, Any]:
        return f"{self.extra['prefix'] if self.extra else ''}{msg}", kwargs


class Supervisor(RollingReload, RestartPolicy):
    """Owns the worker processes of one model and keeps the scheduler's view current."""

    def __init__(
        self,
        spec: Spec,
        slots: list[WorkerSlot],
        scheduler: Scheduler,
        metrics: ModelMetrics,
        on_fatal: Callable[[str], None],
        launcher: WorkerLauncher,
        log_prefix: str = "",
    ) -> None:
        self.spec = spec
        self.log = _Prefixed(log, {"prefix": log_prefix}) if log_prefix else log
        self.launcher = launcher
        self.slots = list(slots)
        self.slot_specs = {s.index: spec for s in slots}  # the version each slot runs (a reload mixes them)
        self._indices = itertools.count(max((s.index for s in slots), default=-1) + 1)
        self._probation: dict[int, asyncio.Future[None]] = {}  # a reload's new slots, until ready
        self.retiring: set[WorkerHandle] = set()
        self.reloading = False
        self.scheduler = scheduler
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.handler_info: HandlerInfo | None = None
        self.workers: dict[int, WorkerHandle] = {}
        self.restarts: dict[int, list[float]] = {s.index: [] for s in slots}
        self.problems: dict[int, str] = {}
        self.restart_count = 0
        self.started_once: set[int] = set()
        self.given_up: set[int] = set()  # slots waiting out restart_window_s before one more try
        self.half_open: set[int] = set()  # slots on that one more try: a crash gives up again
        self.stopping = False
        self._drain_ends: float | None = None  # time.monotonic() when the drain runs out
        self._loop: asyncio.AbstractEventLoop | None = None
        self._setup_timers: dict[int, asyncio.TimerHandle] = {}
        # told when a worker starts taking batches (True) or stops taking them (False): the
        # other API processes reach the same workers (server.api_processes)
        self.on_worker: Callable[[WorkerHandle, bool], None] | None = None

    @property
    def all_ready(self) -> bool:
        return self.ready_count == len(self.slots)

    @property
    def ready_count(self) -> int:
        """Ready workers of the current slots (not a reload's new worker before it is counted in)."""
        return sum(1 for slot in self.slots if (w := self.workers.get(slot.index)) is not None and w.ready)

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        assert self._loop is not None
        spec = self.slot_specs.get(slot.index)
        if self.stopping or spec is None:  # stopping, or the slot was retired by a reload
            return
        worker = WorkerHandle(slot, spec.supervisor.hang_grace_s, self._check_hung)

        def on_lost() -> None:
            worker.drained = True
            self._maybe_gone(worker)

        events = WorkerEvents(lambda msg: self._handle(worker, msg), on_lost, lambda: self._on_exit(worker))
        worker.run = self.launcher.launch(spec, slot, events)
        self.workers[slot.index] = worker
        self._setup_timers[slot.index] = self._loop.call_later(
            spec.supervisor.setup_timeout_s, self._setup_timed_out, worker
        )
        self.log.info("worker %d started (pid %s, %s)", slot.index, worker.pid, slot.label)

    def begin_stopping(self) -> None:
        """The server is draining: workers finish what they hold (within limits.drain_s), and
        none is started again."""
        self.stopping = True
        if self._drain_ends is None:
            self._drain_ends = time.monotonic() + self.spec.limits.drain_s

    async def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Ask every worker to stop, then kill the ones still running `timeout` seconds after
        the drain ran out (after now, with no drain): an idle worker exits at once, and one
        inside a batch nobody waits for any more (its requests got their 503) is not waited for."""
        now = time.monotonic()
        ends = self._drain_ends
        deadline = now + timeout if ends is None else max(ends + timeout, now + min(timeout, STOP_LATE_S))
        self.stopping = True
        for timer in self._setup_timers.values():
            timer.cancel()
        self._setup_timers.clear()
        workers = [*self.workers.values(), *self.retiring]
        self.workers.clear()
        self.retiring.clear()
        for waiting in self._probation.values():
            if not waiting.done():
                waiting.set_exception(ReloadFailed("the server is stopping"))
        for worker in workers:
            worker.stop_watchdog()
            if worker.run is not None:
                worker.run.unwatch()
                worker.run.send(Stop())
                worker.run.close()  # after the Stop is flushed
            self.scheduler.remove_worker(worker, answer_lost)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _join_all, workers, deadline)

    def kill_all(self) -> None:
        """Last resort on a forced exit: end every worker process (and its children) now."""
        for worker in [*self.workers.values(), *self.retiring]:
            worker.kill()

    # --- events -------------------------------------------------------------------

    def _handle(self, worker: WorkerHandle, msg: FromWorker) -> None:
        if deliver(self.scheduler, worker, msg):
            if isinstance(msg, Results):
                self.half_open.discard(worker.index)  # it served: the slot is healthy again
                if worker.retiring and not worker.inflight:
                    self._stop_retired(worker)
            return
        match msg:
            case Ready(info):
                self._on_ready(worker, info)
            case SetupFailed(message):
                self._on_setup_failed(worker, message)

    def _on_ready(self, worker: WorkerHandle, info: HandlerInfo) -> None:
        timer = self._setup_timers.pop(worker.index, None)
        if timer:
            timer.cancel()
        worker.ready = True
        if info.continuous:
            worker.capacity = self.slot_specs.get(worker.index, self.spec).batching.max_batch_size
        streams = info.streams or any(route.streams for route in info.routes.values())
        batching = self.slot_specs.get(worker.index, self.spec).batching
        worker.pipelined = batching.pipeline and not info.continuous and not streams
        probation = self._end_probation(worker.index, None)
        self.handler_info = info if probation or self.handler_info is None else self.handler_info
        self.started_once.add(worker.index)
        self.problems.pop(worker.index, None)
        self.log.info("worker %d ready (%.1fs setup)", worker.index, time.monotonic() - worker.started_at)
        self.scheduler.accept()
        self.scheduler.add_worker(worker)
        if self.on_worker is not None:
            self.on_worker(worker, True)

    def _on_setup_failed(self, worker: WorkerHandle, message: str) -> None:
        self.problems[worker.index] = f"setup failed: {message}"
        self.log.error("worker %d: setup failed: %s", worker.index, message)
        if self._end_probation(worker.index, f"setup failed: {message}"):
            return
        if worker.index not in self.started_once:
            self.on_fatal(f"worker {worker.index} setup failed: {message}")

    def _setup_timed_out(self, worker: WorkerHandle) -> None:
        self._setup_timers.pop(worker.index, None)
        limit = self.slot_specs.get(worker.index, self.spec).supervisor.setup_timeout_s
        self._on_setup_failed(worker, f"setup took longer than supervisor.setup_timeout_s={limit}")
        worker.kill()

    def _check_hung(self, worker: WorkerHandle) -> None:
        """The watchdog: replace a worker whose batch outlived its deadline by hang_grace_s."""
        if worker.hung_now():
            self._replace(worker, "")

    def replace_hung(self, index: int, seen_by: str) -> None:
        """Another API process saw a batch of this worker outlive its deadline."""
        for worker in [*self.workers.values(), *self.retiring]:
            if worker.index == index and not worker.gone and not worker.hung:
                self._replace(worker, f" ({seen_by})")

    def _replace(self, worker: WorkerHandle, seen_by: str) -> None:
        grace = worker.hang_grace_s
        problem = (
            f"worker hung: a batch was still running {grace:g}s (supervisor.hang_grace_s) after its deadline{seen_by}; "
            + ("ending it (it was retiring after a reload)" if worker.retiring else "replacing it")
        )
        if not worker.retiring:
            self.problems[worker.index] = problem
        self.log.error("worker %d (pid %s) hung: %s", worker.index, worker.pid, problem)
        worker.hung = True
        worker.ready = False
        self.scheduler.remove_worker(worker, answer_lost)  # its requests are answered now
        worker.kill()

    def _on_exit(self, worker: WorkerHandle) -> None:
        assert self._loop is not None
        worker.exited = True
        if worker.run is None or not worker.run.attached:
            worker.drained = True
        else:  # the pipe's EOF follows; do not wait for it for ever
            self._loop.call_later(1.0, self._force_drained, worker)
        self._maybe_gone(worker)

    def _force_drained(self, worker: WorkerHandle) -> None:
        if not worker.drained:
            worker.drained = True
            if worker.run is not None:
                worker.run.close()
            self._maybe_gone(worker)

    def _maybe_gone(self, worker: WorkerHandle) -> None:
        """Handle a worker's end once it has exited and everything it sent was read."""
        if not (worker.exited and worker.drained) or worker.gone:
            return
        worker.gone = True
        worker.stop_watchdog()
        run = worker.run
        assert run is not None  # only a launched worker exits
        run.close()
        run.join(0.1)
        run.kill()  # whatever it started is ended with it
        code = run.exitcode
        timer = self._setup_timers.pop(worker.index, None)
        if timer:
            timer.cancel()
        was_ready = worker.ready
        worker.ready = False
        self.scheduler.remove_worker(worker, answer_lost)
        self.retiring.discard(worker)
        if self.stopping or self.workers.get(worker.index) is not worker:
            return
        if not was_ready and self._end_probation(worker.index, f"it exited with code {code} during setup"):
            return
        if not was_ready and worker.index not in self.started_once:
            if worker.index not in self.problems:
                self.on_fatal(f"worker {worker.index} exited with code {code} during setup")
            return
        if not worker.hung:
            self.problems.setdefault(worker.index, f"worker exited with code {code}")
            self.log.error("worker %d (pid %s) exited with code %s", worker.index, worker.pid, code)
        self._schedule_restart(worker.slot, "hung" if worker.hung else "crashed")


def _join_all(workers: list[WorkerHandle], deadline: float) -> None:
    """Wait until `deadline` (time.monotonic()) for the workers to exit, then kill what is left."""
    runs = [worker.run for worker in workers if worker.run is not None]
    for run in runs:
        run.join(max(0.0, deadline - time.monotonic()))
    for run in runs:
        run.kill()  # a worker that did not stop in time, and whatever any worker left running
        run.join(1.0)
