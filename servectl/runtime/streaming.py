"""Streaming in the worker: a generator `predict` (or `encode`) answers chunk by chunk.

A streaming `predict(batch)` yields one list per step with one entry per request: a chunk,
`None` (nothing this step) or `END` (that request is done: its stream closes at once, the
others go on). Between steps the worker reads CANCEL messages: a cancelled request gets no
more chunks, and when every request of the batch is gone the generator is closed, which
stops the generation.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from servectl.handler import HandlerError
from servectl.sdk import END, Chunks, Final, Many
from servectl.runtime import protocol as p
from servectl.runtime.codec import serialize

if TYPE_CHECKING:
    from servectl.runtime.worker import BatchRunner

CANCELLED = 499  # the client went away: nothing is sent to it


class StreamRunner:
    """Runs batches of a streaming handler, sending chunks as they come."""

    def __init__(self, runner: BatchRunner, conn: Connection) -> None:
        self.runner = runner
        self.handler = runner.handler
        self.conn = conn
        self.stop_requested = False
        self._batch_id = 0

    def _send(self, message: object) -> None:
        try:
            self.conn.send(message)
        except OSError:
            raise p.PipeClosed from None

    def _cancelled(self) -> set[int]:
        keys: set[int] = set()
        while True:
            try:
                if not self.conn.poll(0):
                    break
                msg = self.conn.recv()
            except (EOFError, OSError):
                raise p.PipeClosed from None
            if msg[0] == p.CANCEL:
                keys.update(msg[1])
            elif msg[0] == p.STOP:
                self.stop_requested = True
        return keys

    def _end_now(self, result: p.Result) -> None:
        self._send((p.RESULTS, self._batch_id, [result], None))

    def run(self, batch_id: int, items: list[p.Item]) -> list[p.Result]:
        """Stream a batch; the answers not sent yet (the caller sends them with the timing)."""
        self._batch_id = batch_id
        results, ready = self.runner.decode_all(items)
        if results:  # bad requests are answered before the stream starts
            self._send((p.RESULTS, batch_id, results, None))
        if not ready:
            return []
        many = [(key, rid) for key, rid, decoded in ready if isinstance(decoded, Many)]
        if many:
            error = HandlerError(f"{self.handler.name}: a streamed request carries one item, not a list of items")
            failed = [self.runner.handler_failed(k, r, "decode", error) for k, r in many]
            self._send((p.RESULTS, batch_id, failed, None))
            ready = [item for item in ready if not isinstance(item[2], Many)]
        return self._stream(ready) if ready else []

    def _steps(self, ready: list[tuple[int, str, Any]]) -> Generator[list[Any], None, None]:
        h = self.handler
        if inspect.isgeneratorfunction(h.hooks.get("predict")):
            yield from h.predict(h.batch([x for _, _, x in ready]))
            return
        # encode streams: predict once, then each output's chunks, request by request
        outputs = h.unbatch(h.predict(h.batch([x for _, _, x in ready])), len(ready))
        for i, out in enumerate(outputs):
            for chunk in h.hooks["encode"](out):
                step: list[Any] = [None] * len(ready)
                step[i] = _Raw(chunk)
                yield step
            done: list[Any] = [None] * len(ready)
            done[i] = END
            yield done

    def _stream(self, ready: list[tuple[int, str, Any]]) -> list[p.Result]:
        open_ = {i: (key, rid) for i, (key, rid, _) in enumerate(ready)}
        steps = self._steps(ready)
        try:
            for step in steps:
                for key in self._cancelled():
                    for i, (k, _) in list(open_.items()):
                        if k == key:
                            del open_[i]
                            self._end_now((k, CANCELLED, b""))
                if not open_ or self.stop_requested:
                    break
                entries = list(step)
                if len(entries) != len(ready):
                    raise HandlerError(
                        f"{self.handler.name}.predict yielded a step of {len(entries)} chunks for {len(ready)} requests"
                    )
                for i, entry in enumerate(entries):
                    if i in open_ and entry is not None:
                        self._send_entry(open_, i, entry)
                if not open_:
                    break  # every stream ended: do not compute another step
        except Exception as exc:
            return [self.runner.handler_failed(key, rid, "predict", exc) for key, rid in open_.values()]
        finally:
            steps.close()  # stops the generation when the stream ends early
        return [(key, 200, b"") for key, _ in open_.values()]

    def _send_entry(self, open_: dict[int, tuple[int, str]], i: int, entry: Any) -> None:
        """Send one request's share of a step: chunks, then maybe its end."""
        key, rid = open_[i]
        tokens = getattr(entry, "tokens", 0)
        if tokens:
            self._send((p.TOKENS, tokens))
        for chunk in entry if isinstance(entry, Chunks) else [entry]:
            if chunk is END:
                del open_[i]
                self._end_now((key, 200, b""))
                return
            if isinstance(chunk, Final):  # the whole answer at once (a client that did not ask to stream)
                del open_[i]
                self._end_now(self._encode(key, rid, chunk.value))
                return
            result = self._encode(key, rid, chunk)
            if result[1] != 200:  # the chunk could not be encoded: that stream ends with the error
                del open_[i]
                self._end_now(result)
                return
            self._send((p.CHUNK, key, result[2]))

    def _encode(self, key: int, rid: str, chunk: Any) -> p.Result:
        if isinstance(chunk, _Raw):  # already encoded by a streaming encode
            try:
                return key, 200, serialize(chunk.value)
            except Exception as exc:
                return self.runner.handler_failed(key, rid, "serialize", exc)
        return self.runner.encode(key, rid, chunk)


class _Raw:
    """A chunk that a streaming `encode` produced: serialized as is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value
