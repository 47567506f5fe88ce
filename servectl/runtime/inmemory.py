"""Workers as threads of this process, over an in-memory channel: scheduler, supervisor and
real handler code in one process, for tests that need no HTTP and no subprocess.

The channel carries the same encoded messages as a pipe. The worker's end (`ThreadConn`)
blocks like a `multiprocessing.Connection`; the supervisor's end (`ThreadWorker`) gets each
message decoded on the event loop (`call_soon_threadsafe`), and, once the worker thread
returns, the end of the channel and of the worker, in that order, after its last message.

A thread cannot be killed: `kill()` closes the channel both ways and reports the worker
gone at once (what it sends later is dropped), which is what the supervisor sees of a
killed process. The thread itself runs on until its handler returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from types import TracebackType

from servectl.metrics import ModelMetrics
from servectl.runtime.launch import WorkerEvents
from servectl.runtime.scheduler import Scheduler
from servectl.runtime.supervisor import Supervisor
from servectl.spec import Spec
from servectl.worker.adapters import Adapters, NoAdapters
from servectl.worker.devices import WorkerSlot
from servectl.worker.messages import ToWorker, decode_from_worker, encode
from servectl.worker.process import serve

log = logging.getLogger("servectl.worker")


class ThreadConn:
    """The worker thread's end of the channel: blocking send, receive and poll."""

    def __init__(self, inbound: queue.SimpleQueue[bytes | None], deliver: Callable[[bytes], None]) -> None:
        self._inbound = inbound
        self._deliver = deliver
        self._next: list[bytes | None] = []  # what poll() took off the queue
        self.closed = False  # no more sending: the worker was killed, or has returned

    def send_bytes(self, buf: bytes) -> None:
        if self.closed:
            raise OSError("the channel is closed")
        self._deliver(bytes(buf))

    def recv_bytes(self) -> bytes:
        data = self._next.pop() if self._next else self._inbound.get()
        if data is None:  # the other end closed: end of file, for good
            self._next.append(None)
            raise EOFError
        return data

    def poll(self, timeout: float | None = 0.0) -> bool:
        if self._next:
            return True
        try:
            data = self._inbound.get(block=timeout != 0, timeout=timeout or None)
        except queue.Empty:
            return False
        self._next.append(data)
        return True


class ThreadWorker:
    """The supervisor's end: a worker running `worker.serve` in a thread."""

    def __init__(
        self,
        spec: Spec,
        slot: WorkerSlot,
        events: WorkerEvents,
        protocols: Adapters,
    ) -> None:
        self.protocols = protocols
        self._loop = asyncio.get_running_loop()
        self._on_message, self._on_lost, self._on_exit = events
        self._inbound: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.conn = ThreadConn(self._inbound, self._deliver)
        self._exitcode: int | None = None
        self._closed = False
        self._watching = True
        self._ended = False  # its end was reported: later messages are dropped
        self.thread = threading.Thread(
            target=self._main, args=(spec, slot), name=f"servectl-worker-{slot.index}", daemon=True
        )

    @property
    def pid(self) -> int | None:
        return None

    @property
    def address(self) -> str | None:
        return None  # only worker processes are reached by other API processes

    @property
    def exitcode(self) -> int | None:
        return self._exitcode

    @property
    def attached(self) -> bool:
        return True

    def send(self, message: ToWorker) -> None:
        if not self._closed:
            self._inbound.put(encode(message))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbound.put(None)

    def unwatch(self) -> None:
        self._watching = False

    def kill(self) -> None:
        if self._ended or not self.thread.is_alive():
            return
        self._exitcode = -9
        self.conn.closed = True
        self.close()
        self._loop.call_soon(self._report_end)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _main(self, spec: Spec, slot: WorkerSlot) -> None:
        code = 0
        try:
            serve(self.conn, spec, slot, self.protocols)
        except SystemExit as exc:  # a handler that "exits the process"
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d died", slot.index)
            code = 1
        self.conn.closed = True
        if self._exitcode is None:
            self._exitcode = code
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(self._report_end)

    def _deliver(self, data: bytes) -> None:
        try:
            self._loop.call_soon_threadsafe(self._on_bytes, data)
        except RuntimeError:  # the loop is closed
            raise OSError("the channel is closed") from None

    def _on_bytes(self, data: bytes) -> None:
        if not self._ended:
            self._on_message(decode_from_worker(data))

    def _report_end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._on_lost()
        if self._watching:
            self._on_exit()


class ThreadLauncher:
    """Starts each worker as a thread of this process (see the module's note)."""

    def __init__(self, protocols: Adapters | None = None) -> None:
        self.protocols: Adapters = protocols or NoAdapters()  # `protocols.ADAPTERS` for more than predict
        self.started: list[ThreadWorker] = []

    def launch(
        self,
        spec: Spec,
        slot: WorkerSlot,
        events: WorkerEvents,
    ) -> ThreadWorker:
        worker = ThreadWorker(spec, slot, events, self.protocols)
        self.started.append(worker)
        worker.thread.start()
        return worker


class InProcess:
    """A deployment's runtime without HTTP: scheduler, supervisor and thread workers.

    `async with InProcess(spec) as rt:` starts the workers and waits until they are ready;
    `rt.scheduler.submit(...)` then answers as the server's would."""

    def __init__(self, spec: Spec, workers: int = 1, protocols: Adapters | None = None) -> None:
        self.spec = spec
        self.metrics = ModelMetrics()
        self.scheduler = Scheduler(spec.batching, spec.limits.max_queue, self.metrics)
        self.launcher = ThreadLauncher(protocols)
        self.fatal: list[str] = []
        slots = [WorkerSlot(i, "cpu") for i in range(workers)]
        self.supervisor = Supervisor(spec, slots, self.scheduler, self.metrics, self.fatal.append, self.launcher)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.supervisor.all_ready:
            if self.fatal:
                raise RuntimeError(f"cannot serve: {self.fatal[0]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready in {timeout}s: {self.supervisor.problems}")
            await asyncio.sleep(0.001)

    async def __aenter__(self) -> InProcess:
        self.supervisor.start()
        try:
            await self.wait_ready()
        except BaseException:
            await self.supervisor.stop(timeout=1.0)
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.supervisor.stop(timeout=2.0)
