"""How a worker is started: the seam between the supervisor and where a worker runs.

A launcher starts one worker for a slot and reports three things to the supervisor, on the
event loop: each message the worker sends (decoded), the end of its channel once everything
sent was delivered (`on_lost`), and the end of the worker itself (`on_exit`). The supervisor
holds the `WorkerRun` it gets back: to send, close, kill and join.

`ProcessLauncher` (the default, and the only one in production) spawns a process per worker
with a Pipe read by an asyncio protocol and a sentinel watched with `add_reader`: no thread,
no polling. `servectl.runtime.inmemory.ThreadLauncher` runs workers in threads of the same
process, for tests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import os
import signal
import socket
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import NamedTuple, Protocol

from servectl.spec import Spec
from servectl.worker.adapters import Adapters
from servectl.worker.devices import WorkerSlot
from servectl.worker.messages import FromWorker, ToWorker
from servectl.worker.process import worker_main
from servectl.worker.transport import WorkerChannel, widen

log = logging.getLogger("servectl.supervisor")


class WorkerRun(Protocol):
    """One started worker, as the supervisor holds it."""

    @property
    def pid(self) -> int | None: ...

    @property
    def exitcode(self) -> int | None: ...

    @property
    def attached(self) -> bool:
        """Its channel is open (messages can be sent, and its end will be reported)."""
        ...

    @property
    def address(self) -> str | None:
        """The Unix socket the other API processes reach it on (server.api_processes > 1)."""
        ...

    def send(self, message: ToWorker) -> None: ...

    def close(self) -> None:
        """Close the channel, after what was sent is flushed."""
        ...

    def unwatch(self) -> None:
        """Stop reporting the worker's exit (the supervisor is stopping)."""
        ...

    def kill(self) -> None:
        """End the worker now, and whatever it started."""
        ...

    def join(self, timeout: float) -> None:
        """Wait for the worker to end (blocking: call it off the event loop)."""
        ...


class WorkerEvents(NamedTuple):
    """What a launcher reports to the supervisor about one worker."""

    on_message: Callable[[FromWorker], None]  # each message, in order
    on_lost: Callable[[], None]  # the channel ended: everything the worker sent was delivered
    on_exit: Callable[[], None]  # the worker itself ended


class WorkerLauncher(Protocol):
    def launch(
        self,
        spec: Spec,
        slot: WorkerSlot,
        events: WorkerEvents,
    ) -> WorkerRun: ...


class ChannelRun:
    """A worker reached through a channel: what sending and closing it means."""

    channel: WorkerChannel | None

    def send(self, message: ToWorker) -> None:
        if self.channel is not None:
            self.channel.send(message)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


class ProcessWorker(ChannelRun):
    """A worker process: a spawned process leading its own process group, and its pipe."""

    def __init__(
        self,
        index: int,
        process: BaseProcess,
        loop: asyncio.AbstractEventLoop,
        on_exit: Callable[[], None],
        address: str | None = None,
    ) -> None:
        self.index = index
        self.process = process
        self.address = address
        self.channel: WorkerChannel | None = None
        self._loop = loop
        self._on_exit = on_exit
        loop.add_reader(process.sentinel, self._exited)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    @property
    def attached(self) -> bool:
        return self.channel is not None

    async def attach(
        self, conn: Connection, on_message: Callable[[FromWorker], None], on_lost: Callable[[], None]
    ) -> None:
        try:
            self.channel = await WorkerChannel.attach(conn, on_message, on_lost)
        except OSError as exc:
            log.error("worker %d: cannot attach its pipe (%s); ending it", self.index, exc)
            self.kill()

    def _exited(self) -> None:
        self.unwatch()
        self._on_exit()

    def unwatch(self) -> None:
        self._loop.remove_reader(self.process.sentinel)

    def kill(self) -> None:
        """End the worker and every process it started (its own process group)."""
        pid = self.process.pid
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # not in a group of its own (yet)
            if self.process.exitcode is None:
                self.process.kill()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)


class ProcessLauncher:
    """Spawns one process per worker (the `spawn` start method: no state inherited).
    `socket_dir`: where each worker listens for the other API processes (api_processes > 1)."""

    def __init__(self, protocols: Adapters, socket_dir: str | None = None) -> None:
        self._protocols = protocols  # what each worker wraps its handler in (`protocols.ADAPTERS`)
        self._ctx = mp.get_context("spawn")
        self._tasks: set[asyncio.Task[None]] = set()
        self._socket_dir = socket_dir
        self._launched = itertools.count()

    def launch(
        self,
        spec: Spec,
        slot: WorkerSlot,
        events: WorkerEvents,
    ) -> ProcessWorker:
        loop = asyncio.get_running_loop()
        parent, child = self._ctx.Pipe(duplex=True)
        for end in (parent, child):
            with socket.socket(fileno=os.dup(end.fileno())) as sock:
                widen(sock)
        address = None
        if self._socket_dir is not None:  # a fresh name per start: no stale socket is ever reached
            address = os.path.join(self._socket_dir, f"w{next(self._launched)}.sock")
        process = self._ctx.Process(
            target=worker_main,
            args=(child, spec, slot, os.getpid(), self._protocols, address),
            name=f"servectl-worker-{slot.index}",
            daemon=True,
        )
        process.start()
        child.close()
        worker = ProcessWorker(slot.index, process, loop, events.on_exit, address)
        task = loop.create_task(worker.attach(parent, events.on_message, events.on_lost))
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)
        return worker
