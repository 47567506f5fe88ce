"""The inference worker process: imports the handler, runs setup once, then serves batches.

Everything CPU-heavy about a request happens here, off the API event loop: JSON parsing,
validation, decode, predict, encode and serialization. Each failure is turned into an
error answer for the requests it touches; the worker itself keeps running.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from servectl.errors import error_body
from servectl.handler import Handler, HandlerError
from servectl.logs import configure
from servectl.runtime import protocol as p
from servectl.runtime.devices import WorkerSlot
from servectl.spec import Spec

log = logging.getLogger("servectl.worker")


def _to_json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    tolist = getattr(value, "tolist", None)  # numpy / torch scalars and arrays
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def serialize(value: Any) -> bytes:
    return orjson.dumps(value, default=_to_json, option=orjson.OPT_SERIALIZE_NUMPY)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


class BatchRunner:
    """Runs one batch of raw requests through a handler and answers every one of them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def _fail(self, key: int, rid: str, status: int, msg: str, kind: str, detail: Any = None) -> p.Result:
        return key, status, error_body(msg, rid, kind, detail)

    def _handler_failed(self, key: int, rid: str, stage: str, exc: BaseException) -> p.Result:
        log.error(
            "request %s: %s.%s failed\n%s",
            rid,
            self.handler.name,
            stage,
            traceback.format_exc(),
            extra={"request_id": rid, "worker": os.getpid()},
        )
        return self._fail(key, rid, 500, f"{stage} failed: {_short(exc)}", "handler_error")

    def run(self, items: list[p.Item]) -> list[p.Result]:
        results: list[p.Result] = []
        ready: list[tuple[int, str, Any]] = []
        for key, rid, body in items:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
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
            except Exception as exc:
                results.append(self._handler_failed(key, rid, "decode", exc))
        if ready:
            results.extend(self._predict(ready))
        return results

    def _predict(self, ready: list[tuple[int, str, Any]]) -> list[p.Result]:
        h = self.handler
        try:
            outputs = h.unbatch(h.predict(h.batch([x for _, _, x in ready])), len(ready))
        except Exception as exc:
            if len(ready) > 1 and not isinstance(exc, HandlerError):
                # one bad input must not fail its batch-mates: retry each on its own
                return [r for item in ready for r in self._predict([item])]
            return [self._handler_failed(key, rid, "predict", exc) for key, rid, _ in ready]
        return [self._encode(key, rid, out) for (key, rid, _), out in zip(ready, outputs, strict=True)]

    def _encode(self, key: int, rid: str, output: Any) -> p.Result:
        try:
            encoded = self.handler.encode(output)
        except Exception as exc:
            return self._handler_failed(key, rid, "encode", exc)
        try:
            return key, 200, serialize(encoded)
        except Exception as exc:
            return self._handler_failed(key, rid, "serialize", exc)


def worker_main(conn: Connection, spec: Spec, slot: WorkerSlot) -> None:
    """Entry point of a spawned worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the API process decides when we stop
    os.environ.update(slot.environment())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure(spec.server.log_level, spec.server.log_format)
    try:
        if spec.handler is None:
            raise RuntimeError("the spec names no handler")
        handler = Handler.load(spec.handler, spec.base_dir)
        handler.setup(slot.device, spec)
        info = handler.info()
    except BaseException as exc:
        log.debug("setup failed\n%s", traceback.format_exc())
        conn.send((p.SETUP_FAILED, _short(exc)))
        return
    conn.send((p.READY, info))
    runner = BatchRunner(handler)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the API process is gone
        if msg[0] == p.STOP:
            return
        t0 = time.perf_counter()
        results = runner.run(msg[2])
        conn.send((p.RESULTS, msg[1], results, time.perf_counter() - t0))
