"""The first API process's side of `server.api_processes`: it starts the other API
processes, tells them which workers take batches, and does for them what only the owner
of the workers can (replace a hung worker, reload a model).

Each other API process serves on a listening socket of its own, bound here to the same
port with SO_REUSEPORT (the kernel spreads new connections over them), and is handed that
socket and a pipe (`api_link`). It ignores stop signals: the owner tells it to drain, and
waits for it to end before stopping the workers, so nothing it holds is cut. One that dies
is started again (its socket, kept open here, queues new connections meanwhile).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from servectl.metrics_share import retire
from servectl.processes.deployment import Deployment
from servectl.runtime.api_link import (
    Answer,
    Ask,
    Drain,
    FromPeer,
    Serving,
    WorkerHung,
    WorkerRetired,
    WorkerUp,
    decode_from_peer,
)
from servectl.runtime.base import ReloadError
from servectl.runtime.handle import WorkerHandle
from servectl.runtime.local import LocalModel
from servectl.worker.transport import FramedChannel

log = logging.getLogger("servectl")

MAX_ORIGIN = (1 << 16) - 1  # origins fit the 16 bits above a key's ORIGIN_SHIFT
RESTARTS = 5  # of one API process within RESTART_WINDOW_S before it is given up
RESTART_WINDOW_S = 60.0


class Peer:
    """One other API process: its process, its link, its listening sockets."""

    def __init__(self, index: int, sockets: list[socket.socket]) -> None:
        self.index = index
        self.sockets = sockets
        self.process: BaseProcess | None = None
        self.channel: FramedChannel[FromPeer] | None = None
        self.starts: list[float] = []
        self.serving = False  # linked to every worker since it last started
        self.origin = 0  # what its request keys carry: new at each start (a worker drops a dead one's work)


class PeerHub:
    """Starts and links the API processes 1..N-1 (this one is 0)."""

    def __init__(
        self,
        deployment: Deployment,
        sockets: Sequence[list[socket.socket]],
        reload_from: tuple[Sequence[Path], Sequence[str]] | None,
        share_dir: str,
        api_process_main: Callable[..., None],
    ) -> None:
        self.deployment = deployment
        self.api_process_main = api_process_main  # each other API process's entry (`api_process`)
        self.share_dir = share_dir  # the workers' sockets and each API process's metrics
        self.peers = [Peer(i, list(group)) for i, group in enumerate(sockets, start=1)]
        self.reload_from = reload_from
        self.stopping = False
        self._ctx = mp.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._origins = itertools.count(1)

    @property
    def all_serving(self) -> bool:
        """Every other API process can answer (the server's readiness waits for them: a
        connection the kernel hands one that is still starting would wait)."""
        return all(peer.serving for peer in self.peers)

    @property
    def problems(self) -> list[str]:
        return [f"API process {peer.index} is not serving yet" for peer in self.peers if not peer.serving]

    # --- life ---------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for model in self._local_models():
            model.supervisor.on_worker = lambda worker, up, name=model.name: self._announce(name, worker, up)
        for peer in self.peers:
            self._start(peer)

    def _local_models(self) -> list[LocalModel]:
        return [m for m in self.deployment.models.values() if isinstance(m, LocalModel)]

    def _start(self, peer: Peer) -> None:
        assert self._loop is not None
        parent, child = self._ctx.Pipe(duplex=True)
        slots = {m.name: (m.slots, m.device_note) for m in self._local_models()}
        peer.origin = 1 + (next(self._origins) - 1) % MAX_ORIGIN
        peer.process = self._ctx.Process(
            target=self.api_process_main,
            args=(
                self.deployment.spec,
                self.reload_from,
                peer.index,
                peer.origin,
                peer.sockets,
                child,
                slots,
                self.share_dir,
                os.getpid(),
            ),
            name=f"servectl-api-{peer.index}",
            daemon=True,
        )
        peer.process.start()
        peer.starts.append(time.monotonic())
        child.close()
        self._loop.add_reader(peer.process.sentinel, self._exited, peer)
        self._spawn_task(self._attach(peer, parent))
        log.info("API process %d started (pid %s)", peer.index, peer.process.pid)

    async def _attach(self, peer: Peer, conn: Any) -> None:
        channel = await FramedChannel.take_over(
            conn, lambda: FramedChannel(decode_from_peer, lambda msg: self._on_message(peer, msg), lambda: None)
        )
        peer.channel = channel
        for model in self._local_models():  # what takes batches now
            for worker in model.supervisor.workers.values():
                if worker.ready and not worker.retiring:
                    self._send_up(peer, model, worker)

    def drain(self) -> None:
        """The server drains: so do the other API processes. Their listening sockets are
        closed here too, so that new connections are refused, not queued for nobody."""
        self.stopping = True
        for peer in self.peers:
            if peer.channel is not None:
                peer.channel.send(Drain())
            for sock in peer.sockets:
                sock.close()

    async def stop(self, timeout: float) -> None:
        """Drain the other API processes and wait for them to end (before the workers stop)."""
        self.drain()
        assert self._loop is not None
        for peer in self.peers:
            if peer.process is not None:
                self._loop.remove_reader(peer.process.sentinel)
        await self._loop.run_in_executor(None, self._join, timeout)

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for peer in self.peers:
            if peer.process is not None:
                peer.process.join(max(0.0, deadline - time.monotonic()))
                if peer.process.exitcode is None:
                    log.warning("API process %d did not end in %gs: ending it", peer.index, timeout)
                    peer.process.kill()
                    peer.process.join(1.0)
            for sock in peer.sockets:
                sock.close()

    def kill_all(self) -> None:
        for peer in self.peers:
            if peer.process is not None and peer.process.pid is not None and peer.process.exitcode is None:
                os.kill(peer.process.pid, signal.SIGKILL)

    def _exited(self, peer: Peer) -> None:
        assert self._loop is not None and peer.process is not None
        self._loop.remove_reader(peer.process.sentinel)
        peer.process.join(1.0)  # the sentinel is readable a moment before the exit status is
        code = peer.process.exitcode
        peer.channel = None
        peer.serving = False
        if self.stopping:
            return
        now = time.monotonic()
        peer.starts = [t for t in peer.starts if now - t < RESTART_WINDOW_S]
        if len(peer.starts) >= RESTARTS:
            log.error(
                "API process %d exited with code %s, %d times in %gs: not starting it again; its share of new "
                "connections now waits in its socket's queue",
                peer.index,
                code,
                len(peer.starts),
                RESTART_WINDOW_S,
            )
            return
        log.error("API process %d exited with code %s: starting it again", peer.index, code)
        retire(self.share_dir, peer.index, len(peer.starts))  # its counts stay counted
        self._start(peer)

    # --- the link -----------------------------------------------------------------

    def _announce(self, model: str, worker: WorkerHandle, up: bool) -> None:
        for peer in self.peers:
            if peer.channel is None:
                continue
            found = self.deployment.models[model]
            if not up:
                peer.channel.send(WorkerRetired(model, worker.index))
            elif isinstance(found, LocalModel):
                self._send_up(peer, found, worker)

    @staticmethod
    def _send_up(peer: Peer, model: LocalModel, worker: WorkerHandle) -> None:
        run, info = worker.run, model.handler_info
        if run is None or run.address is None or run.pid is None or info is None or peer.channel is None:
            return
        slots = list(model.slots)
        peer.channel.send(
            WorkerUp(model.name, worker.index, run.address, run.pid, info, worker.capacity, worker.pipelined, slots)
        )

    def _on_message(self, peer: Peer, msg: FromPeer) -> None:
        match msg:
            case Serving():
                peer.serving = True
                log.info("API process %d serving", peer.index)
            case WorkerHung(model, index):
                found = self.deployment.models.get(model)
                if isinstance(found, LocalModel):
                    found.supervisor.replace_hung(index, f"API process {peer.index}")
            case Ask(ask, "reload", model):
                self._spawn_task(self._reload(peer, ask, model))

    async def _reload(self, peer: Peer, ask: int, model: str) -> None:
        try:
            reply = Answer(ask, await self.deployment.reload(model), None)
        except ReloadError as exc:
            reply = Answer(ask, None, exc.failure)
        if peer.channel is not None:
            peer.channel.send(reply)

    def _spawn_task(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)
