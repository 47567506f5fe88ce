"""Streaming in the worker: a generator `predict` (or `encode`) answers chunk by chunk.

A streaming `predict(batch)` yields one list per step with one entry per request: a chunk,
`None` (nothing this step) or `END` (that request is done: its stream closes at once, the
others go on). Between steps the worker polls its Inbox: a cancelled request gets no more
chunks (it is answered `Gone`), and when every request of the batch is gone the generator
is closed, which stops the generation.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import Any

from servectl.handler import HandlerError
from servectl.outcome import ENDED, GONE, Reply
from servectl.sdk import END, Chunks, Final, Many
from servectl.worker.batch import BatchRunner, Decoded
from servectl.worker.inbox import Inbox, Outbox
from servectl.worker.messages import Chunk, Request, Result, Results, Tokens


class StreamRunner:
    """Runs batches of a streaming handler, sending chunks as they come."""

    def __init__(self, runner: BatchRunner, outbox: Outbox, inbox: Inbox) -> None:
        self.runner = runner
        self.handler = runner.handler
        self.outbox = outbox
        self.inbox = inbox
        self._batch_id = 0

    def _end_now(self, results: list[Result]) -> None:
        self.outbox.send(Results(self._batch_id, results, None))

    def run(self, batch_id: int, items: list[Request]) -> list[Result]:
        """Stream a batch; the answers not sent yet (the caller sends them with the timing)."""
        self._batch_id = batch_id
        results, ready = self.runner.decode_all(items)
        if results:  # bad requests are answered before the stream starts
            self._end_now(results)
        if not ready:
            return []
        many = [(key, rid) for key, rid, decoded in ready if isinstance(decoded, Many)]
        if many:
            error = HandlerError(f"{self.handler.name}: a streamed request carries one item, not a list of items")
            self._end_now([self.runner.handler_failed(k, r, "decode", error) for k, r in many])
            ready = [item for item in ready if not isinstance(item[2], Many)]
        return self._stream(ready) if ready else []

    def _steps(self, ready: list[Decoded]) -> Generator[list[Any], None, None]:
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

    def _stream(self, ready: list[Decoded]) -> list[Result]:
        open_ = {i: (key, rid) for i, (key, rid, _) in enumerate(ready)}
        index = {key: i for i, (key, _, _) in enumerate(ready)}
        steps = self._steps(ready)
        try:
            for step in steps:
                self.inbox.poll()
                gone = self.inbox.take_cancelled(key for key, _ in open_.values())
                if gone:
                    for key in gone:
                        del open_[index[key]]
                    self._end_now([Result(key, GONE) for key in gone])
                if not open_ or self.inbox.finished:
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
        return [Result(key, ENDED) for key, _ in open_.values()]

    def _send_entry(self, open_: dict[int, tuple[int, str]], i: int, entry: Any) -> None:
        key, rid = open_[i]
        if send_entry(self.runner, self.outbox, self._batch_id, key, rid, entry):
            del open_[i]


def send_entry(runner: BatchRunner, outbox: Outbox, batch_id: int, key: int, rid: str, entry: Any) -> bool:
    """Send one request's share of a step: chunks, then maybe its end. True when it ended."""
    tokens, prompt = getattr(entry, "tokens", 0), getattr(entry, "prompt_tokens", 0)
    if tokens or prompt:
        outbox.send(Tokens(key, prompt, tokens))
    for chunk in entry if isinstance(entry, Chunks) else [entry]:
        if chunk is END:
            outbox.send(Results(batch_id, [Result(key, ENDED)], None))
            return True
        if isinstance(chunk, Final):  # the whole answer at once (a client that did not ask to stream)
            outbox.send(Results(batch_id, [_encode(runner, key, rid, chunk.value)], None))
            return True
        result = _encode(runner, key, rid, chunk)
        if not isinstance(result.outcome, Reply):  # the chunk could not be encoded: its stream ends with the error
            outbox.send(Results(batch_id, [result], None))
            return True
        outbox.send(Chunk(key, result.outcome.body))
    return False


def _encode(runner: BatchRunner, key: int, rid: str, chunk: Any) -> Result:
    if isinstance(chunk, _Raw):  # already encoded by a streaming encode
        return runner.serialize(key, rid, chunk.value)
    return runner.encode(key, rid, chunk)


class _Raw:
    """A chunk that a streaming `encode` produced: serialized as is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value
