"""The inference worker process: imports the handler, runs setup once, then serves batches.

Everything CPU-heavy about a request happens here, off the API event loop: JSON parsing,
validation, decode, predict, encode and serialization. Each failure is turned into a
`Failure` for the requests it touches; the worker itself keeps running. `serve` is the
worker's life after its process is set up; tests run it in a thread (`runtime.inmemory`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

import msgspec

from servectl.handler import Handler
from servectl.logs import configure
from servectl.runners import build_handler
from servectl.spec import Spec
from servectl.worker.adapters import Adapters
from servectl.worker.batch import BatchRunner, StageClock, failed, short
from servectl.worker.channels import ApiProcessChannels
from servectl.worker.devices import WorkerSlot
from servectl.worker.generation import GenerationLoop, generates
from servectl.worker.inbox import Inbox, Outbox
from servectl.worker.messages import Batch, Conn, PipeClosed, Ready, Request, Result, Results, SetupFailed, encode
from servectl.worker.streaming import StreamRunner

log = logging.getLogger("servectl.worker")
_PR_SET_PDEATHSIG = 1


def tie_to_parent(parent_pid: int, own_group: bool = True) -> None:
    """Only the API process decides when a worker stops, and a worker never outlives it.

    A worker leads a process group of its own (the supervisor ends the whole group, so
    processes a handler starts go with it), ignores SIGINT, SIGTERM and SIGHUP (a signal
    to the API's group, as `timeout`, systemd or a shell send, must not cut a batch
    short: the API process drains), and dies when the API process dies, even inside a
    hung predict: PR_SET_PDEATHSIG on Linux, and a thread that watches the parent's pid
    everywhere (it also covers a parent that died before the prctl).
    """
    if own_group:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="servectl-parent-watch", daemon=True).start()


def _exit_with_parent(parent_pid: int, every_s: float = 0.5) -> None:
    while os.getppid() == parent_pid:
        time.sleep(every_s)
    if os.getpgid(0) == os.getpid():  # our own group: us and what we started
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)


Route = Callable[[int, list[Request]], list[Result]]


def _route(
    handler: Handler, spec: Spec, outbox: Outbox, inbox: Inbox, generation: GenerationLoop, clock: StageClock
) -> Route:
    runner = BatchRunner(handler, spec.batching.max_batch_size, outbox, clock)
    if generates(handler):
        return generation.route(handler, runner)
    if handler.streams:
        return StreamRunner(runner, outbox, inbox).run
    return lambda _batch_id, items: runner.run(items)


def build_routes(
    spec: Spec,
    handler: Handler,
    adapters: dict[str, Handler],
    outbox: Outbox,
    inbox: Inbox,
    generation: GenerationLoop | None = None,
    clock: StageClock | None = None,
) -> dict[str, Route]:
    """The handler behind each API route: the spec's own, and the adapters of its api.kind."""
    generation = generation or GenerationLoop(outbox)
    clock = clock or StageClock()
    routes = {"predict": _route(handler, spec, outbox, inbox, generation, clock)}
    for name, adapter in adapters.items():
        routes[name] = _route(adapter, spec, outbox, inbox, generation, clock)
    return routes


def run_by_route(routes: dict[str, Route], batch: Batch) -> list[Result]:
    items = batch.items
    if all(item.route == "predict" for item in items):
        return routes["predict"](batch.batch_id, items)
    results: list[Result] = []
    for route in dict.fromkeys(item.route for item in items):
        group = [item for item in items if item.route == route]
        if route not in routes:  # e.g. /v1/embeddings on a handler with no `embed`
            msg = f"this deployment does not serve the {route!r} route"
            results += [failed(item.key, 404, "not_found", msg) for item in group]
            continue
        results += routes[route](batch.batch_id, group)
    return results


def serve(conn: Conn, spec: Spec, slot: WorkerSlot, protocols: Adapters) -> None:
    """A worker's life once its process (or test thread) is set up: build the handler, run
    setup, wrap it in its protocols' adapters, report Ready (or SetupFailed), then answer
    batches until Stop or the channel closes."""
    outbox, inbox = Outbox(conn), Inbox(conn)
    generation = GenerationLoop(outbox)
    clock = StageClock()
    try:
        handler = build_handler(spec)
        handler.setup(slot.device, spec)
        adapters = protocols.build(spec, handler)
        routes = build_routes(spec, handler, adapters, outbox, inbox, generation, clock)
        info = protocols.describe(handler, adapters)
        continuous = spec.batching.continuous and any(map(generates, [handler, *adapters.values()]))
        ready = encode(Ready(msgspec.structs.replace(info, continuous=continuous)))
    except BaseException as exc:
        log.debug("setup failed\n%s", traceback.format_exc())
        with contextlib.suppress(PipeClosed):
            outbox.send(SetupFailed(short(exc)))
        return
    try:
        outbox.send_encoded(ready)
        _answer_batches(routes, inbox, outbox, generation, clock)
    except PipeClosed:
        return  # the API process closed the pipe: it is stopping, or gone


def _answer_batches(
    routes: dict[str, Route], inbox: Inbox, outbox: Outbox, generation: GenerationLoop, clock: StageClock
) -> None:
    """Batches until Stop. While jobs generate, the loop steps them and takes what arrives
    between steps without waiting: new requests join the running batch."""
    while True:
        if generation.busy:
            inbox.poll()
            generation.cancel(inbox.take_cancelled(list(generation.jobs)))
            if inbox.finished:
                generation.end_all()
                return
            batch = inbox.take_batch()
        elif (batch := inbox.next_batch()) is None:
            return
        if batch is not None:
            t0 = time.perf_counter()
            results = run_by_route(routes, batch)
            predict_s = None if generation.took(batch.items) else time.perf_counter() - t0
            stages = clock.take()
            if results or predict_s is not None:
                outbox.send(Results(batch.batch_id, results, predict_s, stages if predict_s is not None else None))
            if inbox.finished and not generation.busy:
                return
        if generation.busy:
            generation.step()


def worker_main(
    conn: Connection, spec: Spec, slot: WorkerSlot, parent_pid: int, protocols: Adapters, address: str | None = None
) -> None:
    """Entry point of a spawned worker process; `address`: the Unix socket other API
    processes reach it on (server.api_processes > 1)."""
    tie_to_parent(parent_pid)
    os.environ.update(slot.environment())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure(spec.server.log_level, spec.server.log_format)
    serve(conn if address is None else ApiProcessChannels(conn, address), spec, slot, protocols)
