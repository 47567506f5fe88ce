"""One model as an API process that does not own its workers sees it (`server.api_processes`).

The first API process spawns, watches and restarts the workers; this one hears over its
link which workers take batches (`api_link.WorkerUp`), connects to each on the worker's
socket and runs a scheduler of its own in front of them: its own queue, batches and hang
watchdog. A worker's connection that ends answers what this process had sent it (503), as
the supervisor does for its own; a hung batch is reported to the owner, who replaces the
worker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from servectl.handler import HandlerInfo
from servectl.metrics import ModelMetrics
from servectl.outcome import Failure
from servectl.runtime.api_link import (
    Answer,
    Ask,
    Drain,
    Serving,
    ToPeer,
    WorkerHung,
    WorkerRetired,
    WorkerUp,
    decode_to_peer,
)
from servectl.runtime.base import Planner
from servectl.runtime.handle import WorkerHandle, answer_lost, deliver
from servectl.runtime.launch import ChannelRun
from servectl.runtime.local import model_info
from servectl.runtime.scheduler import Scheduler
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot
from servectl.worker.messages import FromWorker
from servectl.worker.transport import FramedChannel, WorkerChannel, widen

log = logging.getLogger("servectl")


class SocketRun(ChannelRun):
    """A worker as reached on its socket: this process sends and reads; it never ends it."""

    def __init__(self, up: WorkerUp) -> None:
        self.up = up
        self.channel = None

    @property
    def pid(self) -> int | None:
        return self.up.pid

    @property
    def exitcode(self) -> int | None:
        return None

    @property
    def attached(self) -> bool:
        return self.channel is not None

    @property
    def address(self) -> str | None:
        return self.up.address

    def unwatch(self) -> None:
        pass

    def kill(self) -> None:
        self.close()  # the owner ends the worker (told through the link)

    def join(self, timeout: float) -> None:
        pass


class RemoteModel:
    """A model's queue and batcher in front of workers another API process owns."""

    def __init__(
        self,
        spec: Spec,
        slots: list[WorkerSlot],
        device_note: str,
        metrics: ModelMetrics,
        origin: int,
        report_hung: Callable[[str, int], None],
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.device_note = device_note
        self.metrics = metrics
        self.scheduler = Scheduler(spec.batching, spec.limits.max_queue, metrics, origin)
        self.handler_info: HandlerInfo | None = None
        self._slots = list(slots)
        self.workers: dict[int, WorkerHandle] = {}  # by index: those that take batches
        self.retiring: set[WorkerHandle] = set()  # replaced by a reload, answering what they hold
        self.reloads = 0  # as the owner counts them (read with /info)
        self.restarts = 0
        self._report_hung = report_hung
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.on_ready: Callable[[], None] | None = None  # every worker connected
        metrics.gauge("servectl_queue_depth", self._queue_depth)
        metrics.gauge("servectl_worker_inflight", self._inflight)

    # --- what the server asks -----------------------------------------------------

    @property
    def slots(self) -> list[WorkerSlot]:
        return self._slots

    @property
    def ready_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.ready and not w.retiring)

    @property
    def ready(self) -> bool:
        return self.ready_count >= len(self._slots)

    @property
    def given_up(self) -> bool:
        return False  # the owner's probe says so; this process can still queue and refuse

    @property
    def problems(self) -> list[str]:
        if self.ready:
            return []
        linked = self.ready_count
        return [f"this API process is linking to the workers ({linked} of {len(self._slots)} linked)"]

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopping = True
        for worker in [*self.workers.values(), *self.retiring]:
            self.scheduler.remove_worker(worker, answer_lost)
            worker.stop_watchdog()
            worker.kill()

    def begin_stopping(self) -> None:
        self.stopping = True

    def kill_all(self) -> None:
        pass  # the owner's workers

    def open_requests(self) -> int:
        return len(self.scheduler.queue) + sum(len(w.inflight) for w in [*self.workers.values(), *self.retiring])

    async def reload(self, spec: Spec, plan: Planner) -> dict[str, Any]:
        raise NotImplementedError("the deployment forwards reloads to the API process that owns the workers")

    def info(self) -> dict[str, Any]:
        return model_info(self, self.restarts, self.reloads)

    def _queue_depth(self) -> dict[str, float]:
        return {"": len(self.scheduler.queue)}

    def _inflight(self) -> dict[str, float]:
        return {str(w.index): len(w.inflight) for w in self.workers.values()}

    # --- what the owner says ------------------------------------------------------

    def worker_up(self, up: WorkerUp) -> None:
        """A worker takes batches: connect to it (a worker it replaces was dropped on its
        connection's end)."""
        self._slots = up.slots
        self.handler_info = up.info
        slot = next((s for s in up.slots if s.index == up.index), WorkerSlot(up.index, "cpu"))
        worker = WorkerHandle(slot, self.spec.supervisor.hang_grace_s, self._check_hung)
        run = SocketRun(up)
        worker.run = run
        worker.capacity, worker.pipelined = up.capacity, up.pipelined
        old = self.workers.get(up.index)
        if old is not None:
            self._lost(old)
        self.workers[up.index] = worker
        task = asyncio.get_running_loop().create_task(self._connect(worker, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, worker: WorkerHandle, run: SocketRun) -> None:
        loop = asyncio.get_running_loop()

        def on_message(msg: FromWorker) -> None:
            deliver(self.scheduler, worker, msg)
            if worker.retiring and not worker.inflight:
                self.retiring.discard(worker)
                worker.kill()  # nothing left there: close the connection, the worker may stop

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        widen(sock)  # before connecting: the buffers are sized at the handshake
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, run.up.address)
            _, channel = await loop.create_unix_connection(
                lambda: WorkerChannel(on_message, lambda: self._lost(worker)), sock=sock
            )
        except OSError as exc:
            sock.close()
            log.error("model %s: cannot reach worker %d at %s (%s)", self.name, worker.index, run.up.address, exc)
            self._lost(worker)
            return
        run.channel = channel
        if self.stopping or self.workers.get(worker.index) is not worker:
            channel.close()
            return
        worker.ready = True
        self.scheduler.accept()
        self.scheduler.add_worker(worker)
        if self.on_ready is not None and self.ready:
            self.on_ready()

    def worker_retired(self, index: int) -> None:
        """A reload replaced the worker: send it nothing more; close once it holds nothing."""
        worker = self.workers.pop(index, None)
        if worker is None:
            return
        worker.retiring = True
        self.scheduler.retire_worker(worker)
        if worker.inflight:
            self.retiring.add(worker)
        else:
            worker.kill()

    def _lost(self, worker: WorkerHandle) -> None:
        """The worker's connection ended: it crashed, hung, or retired; answer what it held."""
        worker.ready = False
        worker.gone = True
        worker.stop_watchdog()
        self.scheduler.remove_worker(worker, answer_lost)
        self.retiring.discard(worker)
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]

    def _check_hung(self, worker: WorkerHandle) -> None:
        if not worker.hung_now():
            return
        log.error(
            "model %s: worker %d hung (a batch outlived its deadline): asking for it to be replaced",
            self.name,
            worker.index,
        )
        worker.hung = True
        self._report_hung(self.name, worker.index)
        self._lost(worker)
        worker.kill()


class OwnerLink:
    """This API process's end of the link to the one that owns the workers (`api_link`)."""

    def __init__(
        self, index: int, origin: int, slots: dict[str, tuple[list[WorkerSlot], str]], conn: Connection
    ) -> None:
        self.index = index
        self.origin = origin  # what this process's request keys carry (new at each start)
        self.slots = slots  # each model's worker slots and their placement, when this process started
        self.models: dict[str, RemoteModel] = {}
        self.on_drain: Callable[[], None] | None = None
        self.draining = False
        self.serving = False  # the owner was told every model is ready here
        self._conn: Connection | None = conn
        self._channel: FramedChannel[ToPeer] | None = None
        self._asks = itertools.count()
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._task: asyncio.Task[None] | None = None

    def model(self, spec: Spec, metrics: ModelMetrics) -> RemoteModel:
        slots, note = self.slots.get(spec.name, ([], "owned by API process 0"))
        model = self.models[spec.name] = RemoteModel(spec, slots, note, metrics, self.origin, self.report_hung)
        model.on_ready = self._maybe_serving
        return model

    def _maybe_serving(self) -> None:
        """Tell the owner once every model can be answered here (its /ready waits for it)."""
        if not self.serving and self._channel is not None and all(m.ready for m in self.models.values()):
            self.serving = True
            self._channel.send(Serving())

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._attach())

    async def _attach(self) -> None:
        assert self._conn is not None
        conn, self._conn = self._conn, None
        self._channel = await FramedChannel.take_over(
            conn, lambda: FramedChannel(decode_to_peer, self._on_message, self._lost)
        )
        self._maybe_serving()  # workers may have connected before this returned

    def _on_message(self, msg: ToPeer) -> None:
        match msg:
            case WorkerUp():
                model = self.models.get(msg.model)
                if model is not None:
                    model.worker_up(msg)
            case WorkerRetired(name, index):
                model = self.models.get(name)
                if model is not None:
                    model.worker_retired(index)
            case Answer(ask):
                waiting = self._waiting.pop(ask, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(msg)
            case Drain():
                self.draining = True
                if self.on_drain is not None:
                    self.on_drain()

    def _lost(self) -> None:
        if not self.draining:  # the owner is gone, and its workers with it
            log.error("API process %d: the first API process is gone; exiting", self.index)
            os._exit(1)

    def report_hung(self, model: str, index: int) -> None:
        if self._channel is not None:
            self._channel.send(WorkerHung(model, index))

    async def ask(self, kind: str, model: str) -> Answer:
        """Have the owner do what only it can (a reload), and wait for its answer."""
        if self._channel is None:
            return Answer(-1, None, Failure(503, "unavailable", "this API process is not linked to its owner yet"))
        ask = next(self._asks)
        waiting: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[ask] = waiting
        self._channel.send(Ask(ask, kind, model))
        return await waiting
