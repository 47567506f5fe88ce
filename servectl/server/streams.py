"""Sending a stream: chunks as NDJSON or SSE, and an error after the first chunk as a final
error event (the status line has gone by then), then a clean close."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from servectl.outcome import Answer, Ended, Failure, Reply, status_of
from servectl.protocols import ApiProtocol
from servectl.runtime.scheduler import CUT_AFTER_S, Pending
from servectl.server.asgi import Send

log = logging.getLogger("servectl")
NDJSON = b"application/x-ndjson"
SSE = b"text/event-stream"


class CutStreamsAreExpected(logging.Filter):
    """uvicorn logs an error when an app returns before its response is complete. For a stream
    cut off from a client that stopped reading, that is the intent (logged by us as a warning):
    install this on uvicorn's error logger to drop that one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "ASGI callable returned without completing response."


def pick_format(accept: bytes | None, default: str) -> bytes:
    """The client's Accept decides between SSE and NDJSON; else the spec's default."""
    if accept:
        if SSE in accept:
            return SSE
        if NDJSON in accept:
            return NDJSON
    return SSE if default == "sse" else NDJSON


def frame(fmt: bytes, body: bytes, error: bool = False) -> bytes:
    if fmt == SSE:
        return (b"event: error\ndata: " if error else b"data: ") + body + b"\n\n"
    return body + b"\n"


async def send_stream(
    send: Send,
    pending: Pending,
    rid: str,
    fmt: bytes,
    cut: Callable[[Pending], None],
    protocol: ApiProtocol,
    done: bool = False,
    observe: Callable[[bytes], None] | None = None,
) -> int:
    """Relay a started stream until its end; the status to log (200, or the error's).
    An error event is in `protocol`'s shape; `done` ends a clean SSE stream with
    `data: [DONE]` (OpenAI's convention); `observe` sees each chunk before it is sent.

    A client that reads slower than its stream is made to wait in `send` (the transport
    pushes back). It may lag until its deadline (plus CUT_AFTER_S for the error event to
    go out); then, or when a drain runs out, it is cut off: its generation is cancelled
    and the connection closed without the rest.
    """
    assert pending.stream is not None
    headers = [(b"content-type", fmt), (b"cache-control", b"no-cache"), (b"x-request-id", rid.encode())]
    status = 200
    budget = pending.deadline - time.perf_counter() + CUT_AFTER_S
    try:
        async with asyncio.timeout(budget if budget != math.inf else None) as pending.sending:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            while True:
                item = await pending.stream.get()
                if isinstance(item, bytes):
                    pending.buffered -= len(item)
                    if observe is not None:
                        observe(item)
                    await send({"type": "http.response.body", "body": frame(fmt, item), "more_body": True})
                    continue
                status = status_of(item)
                if isinstance(item, Failure):
                    tail = frame(fmt, protocol.error_body(item, rid), error=True)
                elif isinstance(item, Reply):  # a whole answer where a stream began: its last chunk
                    tail = frame(fmt, item.body) + (b"data: [DONE]\n\n" if done else b"")
                else:
                    tail = b"data: [DONE]\n\n" if done and isinstance(item, Ended) else b""
                await send({"type": "http.response.body", "body": tail, "more_body": False})
                return status
    except TimeoutError:
        cut(pending)
        while status == 200 and not pending.stream.empty():  # the end it could not take, if one came
            item = pending.stream.get_nowait()
            if not isinstance(item, bytes):
                status = status_of(item)
        log.warning("request %s: stream cut off: its client did not read it in time", rid)
        return status if status != 200 else 504
    finally:
        pending.sending = None


async def collect(pending: Pending) -> Answer:
    """A stream gathered into one JSON array, for a route that does not stream."""
    assert pending.stream is not None
    chunks: list[bytes] = []
    while True:
        item = await pending.stream.get()
        if isinstance(item, bytes):
            pending.buffered -= len(item)  # taken off the stream: only a slow reader is bounded
            chunks.append(item)
            continue
        if isinstance(item, Ended):
            return Reply(b"[" + b",".join(chunks) + b"]")
        return item
