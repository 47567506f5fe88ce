"""The inference worker process: imports the handler, runs setup once, then serves batches.

Everything CPU-heavy about a request happens here, off the API event loop: JSON parsing,
validation, decode, predict, encode and serialization. Each failure is turned into an
error answer for the requests it touches; the worker itself keeps running.
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
from typing import Any

from pydantic import ValidationError

from servectl.protocols import build_adapters, describe
from servectl.runners import build_handler
from servectl.errors import error_body
from servectl.handler import Handler, HandlerError
from servectl.sdk import InvalidInput, Many
from servectl.logs import configure
from servectl.runtime import protocol as p
from servectl.runtime.codec import parse, serialize
from servectl.runtime.devices import WorkerSlot
from servectl.runtime.streaming import StreamRunner
from servectl.spec import Spec

log = logging.getLogger("servectl.worker")
_PR_SET_PDEATHSIG = 1


def tie_to_parent(parent_pid: int) -> None:
    """Only the API process decides when a worker stops, and a worker never outlives it.

    A worker leads a process group of its own (the supervisor ends the whole group, so
    processes a handler starts go with it), ignores SIGINT, SIGTERM and SIGHUP (a signal
    to the API's group, as `timeout`, systemd or a shell send, must not cut a batch
    short: the API process drains), and dies when the API process dies, even inside a
    hung predict: PR_SET_PDEATHSIG on Linux, and a thread that watches the parent's pid
    everywhere (it also covers a parent that died before the prctl).
    """
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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


class BatchRunner:
    """Runs one batch of raw requests through a handler and answers every one of them."""

    def __init__(self, handler: Handler, max_batch_size: int) -> None:
        self.handler = handler
        self.max_batch_size = max_batch_size

    def _fail(self, key: int, rid: str, status: int, msg: str, kind: str, detail: Any = None) -> p.Result:
        return key, status, error_body(msg, rid, kind, detail)

    def _invalid(self, key: int, rid: str, exc: InvalidInput) -> p.Result:
        detail = [{"loc": exc.field.split("."), "msg": str(exc), "type": "invalid_input"}]
        kind = "not_found" if exc.status == 404 else "validation_error"
        return self._fail(key, rid, exc.status, f"invalid {exc.field}: {exc}", kind, detail)

    def handler_failed(self, key: int, rid: str, stage: str, exc: BaseException) -> p.Result:
        log.error(
            "request %s: %s.%s failed\n%s",
            rid,
            self.handler.name,
            stage,
            "".join(traceback.format_exception(exc)),
            extra={"request_id": rid, "worker": os.getpid()},
        )
        return self._fail(key, rid, 500, f"{stage} failed: {_short(exc)}", "handler_error")

    def run(self, items: list[p.Item]) -> list[p.Result]:
        results, ready = self.decode_all(items)
        if ready:
            results.extend(self._predict(ready))
        return results

    def decode_all(self, items: list[p.Item]) -> tuple[list[p.Result], list[tuple[int, str, Any]]]:
        """Parse, validate and decode each request: error answers, and what is ready to predict."""
        results: list[p.Result] = []
        ready: list[tuple[int, str, Any]] = []
        for key, rid, body, _ in items:
            try:
                payload = parse(body)
            except ValueError as exc:
                results.append(self._fail(key, rid, 400, f"malformed JSON: {exc}", "bad_request"))
                continue
            try:
                request = self.handler.validate(payload)
            except ValidationError as exc:
                detail = [
                    {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
                ]
                fields = ", ".join(".".join(map(str, d["loc"])) or "<body>" for d in detail)
                results.append(self._fail(key, rid, 422, f"invalid request: {fields}", "validation_error", detail))
                continue
            try:
                ready.append((key, rid, self.handler.decode(request)))
            except InvalidInput as exc:
                results.append(self._invalid(key, rid, exc))
            except Exception as exc:
                results.append(self.handler_failed(key, rid, "decode", exc))
        return results, ready

    def _predict(self, ready: list[tuple[int, str, Any]]) -> list[p.Result]:
        """Predict every item, max_batch_size at a time; regroup outputs by request."""
        flat = [(i, item) for i, (_, _, x) in enumerate(ready) for item in (x if isinstance(x, Many) else [x])]
        outputs: dict[int, list[Any]] = {}
        failed: dict[int, Exception] = {}
        for start in range(0, len(flat), self.max_batch_size):
            self._predict_chunk(flat[start : start + self.max_batch_size], outputs, failed)
        results = []
        for i, (key, rid, decoded) in enumerate(ready):
            exc = failed.get(i)
            if isinstance(exc, InvalidInput):
                results.append(self._invalid(key, rid, exc))
            elif exc is not None:
                results.append(self.handler_failed(key, rid, "predict", exc))
            else:
                out = outputs.get(i, [])
                results.append(self.encode(key, rid, out if isinstance(decoded, Many) else out[0]))
        return results

    def _predict_chunk(
        self, chunk: list[tuple[int, Any]], outputs: dict[int, list[Any]], failed: dict[int, Exception]
    ) -> None:
        h = self.handler
        try:
            outs = h.unbatch(h.predict(h.batch([item for _, item in chunk])), len(chunk))
        except Exception as exc:
            if len(chunk) > 1 and not isinstance(exc, HandlerError):
                # one bad input must not fail its batch-mates: retry each on its own
                for entry in chunk:
                    self._predict_chunk([entry], outputs, failed)
                return
            for i, _ in chunk:
                failed.setdefault(i, exc)
            return
        for (i, _), out in zip(chunk, outs, strict=True):
            outputs.setdefault(i, []).append(out)

    def encode(self, key: int, rid: str, output: Any) -> p.Result:
        try:
            encoded = self.handler.encode(output)
        except Exception as exc:
            return self.handler_failed(key, rid, "encode", exc)
        try:
            return key, 200, serialize(encoded)
        except Exception as exc:
            return self.handler_failed(key, rid, "serialize", exc)


Route = Callable[[int, list[p.Item]], list[p.Result]]


def _route(handler: Handler, spec: Spec, conn: Connection, streamers: list[StreamRunner]) -> Route:
    runner = BatchRunner(handler, spec.batching.max_batch_size)
    if handler.streams:
        streamer = StreamRunner(runner, conn)
        streamers.append(streamer)
        return streamer.run
    return lambda _batch_id, items: runner.run(items)


def build_routes(
    spec: Spec, handler: Handler, adapters: dict[str, Handler], conn: Connection, streamers: list[StreamRunner]
) -> dict[str, Route]:
    """The handler behind each API route: the spec's own, and the adapters of its api.kind."""
    routes = {"predict": _route(handler, spec, conn, streamers)}
    for name, adapter in adapters.items():
        routes[name] = _route(adapter, spec, conn, streamers)
    return routes


def _run_by_route(routes: dict[str, Route], batch_id: int, items: list[p.Item]) -> list[p.Result]:
    if all(item[3] == "predict" for item in items):
        return routes["predict"](batch_id, items)
    results: list[p.Result] = []
    for route in dict.fromkeys(item[3] for item in items):
        group = [item for item in items if item[3] == route]
        if route not in routes:  # e.g. /v1/embeddings on a handler with no `embed`
            msg = f"this deployment does not serve the {route!r} route"
            results += [(key, 404, error_body(msg, rid, "not_found")) for key, rid, _, _ in group]
            continue
        results += routes[route](batch_id, group)
    return results


def worker_main(conn: Connection, spec: Spec, slot: WorkerSlot, parent_pid: int) -> None:
    """Entry point of a spawned worker process."""
    tie_to_parent(parent_pid)
    os.environ.update(slot.environment())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure(spec.server.log_level, spec.server.log_format)
    streamers: list[StreamRunner] = []
    try:
        handler = build_handler(spec)
        handler.setup(slot.device, spec)
        adapters = build_adapters(spec, handler)
        routes = build_routes(spec, handler, adapters, conn, streamers)
        info = describe(handler, adapters)
    except BaseException as exc:
        log.debug("setup failed\n%s", traceback.format_exc())
        with contextlib.suppress(OSError):
            conn.send((p.SETUP_FAILED, _short(exc)))
        return
    try:
        conn.send((p.READY, info))
        while True:
            msg = conn.recv()
            if msg[0] == p.STOP:
                return
            if msg[0] != p.BATCH:
                continue  # a late CANCEL for a stream that already ended
            t0 = time.perf_counter()
            results = _run_by_route(routes, msg[1], msg[2])
            conn.send((p.RESULTS, msg[1], results, time.perf_counter() - t0))
            if any(s.stop_requested for s in streamers):
                return
    except (EOFError, OSError, p.PipeClosed):
        return  # the API process closed the pipe: it is stopping, or gone
