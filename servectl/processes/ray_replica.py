"""A servectl worker inside a Ray Serve replica.

The replica runs `worker.serve` (the very loop a local worker process runs) in a thread,
over an in-memory channel: handler import, setup, decode, predict, encode, streaming and
errors are the local worker's. A call carries one encoded `Batch` and answers with the
encoded messages the worker sent for it (its stream's chunks, then `Results`), found by the
request keys and batch id they carry: a generating worker interleaves several batches.

`__call__` answers Ray's own HTTP proxy (a `serve deploy` of `servectl export ray`): a
POST body is one request to the model's predict route.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any

from servectl.logs import configure
from servectl.outcome import Failure, Reply
from servectl.protocols import ADAPTERS
from servectl.protocols.predict.errors import failure_body
from servectl.runtime.inmemory import ThreadConn
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot
from servectl.worker.messages import (
    Batch,
    Cancel,
    Chunk,
    Ready,
    Request,
    Results,
    SetupFailed,
    Stop,
    Tokens,
    decode_from_worker,
    decode_to_worker,
    encode,
)
from servectl.worker.process import serve

log = logging.getLogger("servectl.worker")


def rebuild_spec(data: dict[str, Any], source: str, base_dir: str) -> Spec:
    """A model's Spec from its JSON form (what travels to a replica), located where it was read."""
    spec = Spec.model_validate(data)
    spec._source, spec._base_dir = source, base_dir
    return spec


class Replica:
    """One Ray Serve replica of a model: a servectl worker in a thread."""

    def __init__(self, spec_data: dict[str, Any], source: str, base_dir: str) -> None:
        spec = rebuild_spec(spec_data, source, base_dir)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        configure(spec.server.log_level, spec.server.log_format)
        gpus = _gpu_ids()
        slot = WorkerSlot(0, "cuda", gpus[0]) if gpus else WorkerSlot(0, "cpu")
        self._inbound: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._conn = ThreadConn(self._inbound, self._deliver)
        self._first: queue.SimpleQueue[bytes] = queue.SimpleQueue()  # Ready or SetupFailed
        self._calls: dict[int, asyncio.Queue[tuple[bytes, bool]]] = {}  # by batch id
        self._keys: dict[int, asyncio.Queue[tuple[bytes, bool]]] = {}  # by request key
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count()
        self._thread = threading.Thread(
            target=serve, args=(self._conn, spec, slot, ADAPTERS), daemon=True, name="servectl"
        )
        self._thread.start()
        first = self._first.get()
        message = decode_from_worker(first)
        if isinstance(message, SetupFailed):
            raise RuntimeError(f"setup failed: {message.message}")
        assert isinstance(message, Ready)
        self._ready = first

    def info(self) -> bytes:
        """The encoded `Ready` (hooks, schemas) of this replica's worker."""
        return self._ready

    async def run(self, batch: bytes) -> list[bytes]:
        """A batch's messages, once its `Results` came."""
        messages = []
        async for message in self.stream(batch):
            messages.append(message)
        return messages

    async def stream(self, batch: bytes) -> AsyncIterator[bytes]:
        """A batch's messages as the worker sends them (chunks first); a cancelled call
        (the client left, the deadline passed) cancels its requests at the worker."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        answers: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
        message_in = _batch(batch)
        keys = [item.key for item in message_in.items]
        self._calls[message_in.batch_id] = answers
        self._keys.update(dict.fromkeys(keys, answers))
        self._inbound.put(batch)
        done = False
        try:
            while not done:
                message, done = await answers.get()
                yield message
        finally:
            self._calls.pop(message_in.batch_id, None)
            for key in keys:
                self._keys.pop(key, None)
            if not done:
                self._inbound.put(encode(Cancel(keys)))

    async def __call__(self, request: Any) -> Any:
        """One request from Ray's HTTP proxy to the model's predict route."""
        from starlette.responses import Response

        n = next(self._ids)
        rid = request.headers.get("x-request-id") or f"ray-{n}"
        body = await request.body()
        own = -1 - n  # negative batch ids and keys: never those of servectl's own scheduler
        messages = await self.run(encode(Batch(own, [Request(own, rid, body, "predict")])))
        final = decode_from_worker(messages[-1])
        assert isinstance(final, Results)
        outcome = final.results[0].outcome
        if isinstance(outcome, Reply):
            return Response(outcome.body, media_type="application/json")
        failure = outcome if isinstance(outcome, Failure) else Failure(500, "handler_error", "no answer")
        return Response(failure_body(failure, rid), status_code=failure.status, media_type="application/json")

    def __del__(self) -> None:
        self._inbound.put(encode(Stop()))

    def _deliver(self, data: bytes) -> None:
        """From the worker thread: the first message to __init__, the rest to the oldest call."""
        if self._loop is None:
            self._first.put(data)
            return
        self._loop.call_soon_threadsafe(self._route, data)

    def _route(self, data: bytes) -> None:
        """A worker message to the call it belongs to: a chunk by its key, results by their
        batch (the batch is complete when they carry its time), token counts by their key."""
        message = decode_from_worker(data)
        call: asyncio.Queue[tuple[bytes, bool]] | None = None
        final = False
        match message:
            case Chunk(key=key):
                call = self._keys.get(key)
            case Results(batch_id=batch_id, predict_s=predict_s):
                call = self._calls.get(batch_id)
                final = predict_s is not None
            case Tokens(key=key):
                call = self._keys.get(key)
        if call is not None:
            call.put_nowait((data, final))


def _batch(data: bytes) -> Batch:
    message = decode_to_worker(data)
    assert isinstance(message, Batch)
    return message


def _gpu_ids() -> list[int]:
    import ray

    return [int(g) for g in ray.get_gpu_ids()]


def build(args: dict[str, Any]) -> Any:
    """Application builder for `serve deploy` (`runtime.ray.app.BUILD_IMPORT`): `args` are
    `replica_args` (its deployment's options come from the config file)."""
    from ray import serve

    deployment: Any = serve.deployment(Replica)  # named as the config's deployment: the model's name
    return deployment.options(name=args["spec_data"]["name"]).bind(**args)
