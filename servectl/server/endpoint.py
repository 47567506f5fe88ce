"""The model route: raw body in, queued for a worker, raw worker answer out.

This is the hot path. It stays on plain ASGI (no FastAPI request objects, no parsing:
workers parse) and applies the deadline, back-pressure and client disconnects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson

from servectl.errors import error_body
from servectl.runtime.scheduler import STREAMING, NoWorkers, Pending, QueueFull, Scheduler
from servectl.server.asgi import BodyTooLarge, Receive, Scope, Send, read_body, send_bytes
from servectl.server.protocol import ABORT
from servectl.server.streams import SSE, collect, pick_format, send_stream
from servectl.spec import Spec

RETRY_AFTER = [(b"retry-after", b"1")]
_CLOSE = [(b"connection", b"close")]  # the rest of an unread body is not worth reading
CLIENT_GONE = 499  # nginx's code: logged and counted, never sent
WATCH_AFTER_S = 0.02


class PredictEndpoint:
    """`POST {api.path}`: one request through the scheduler to a worker and back.

    The deadline (`limits.timeout_s`) counts from the request's start, so reading the body
    counts too: a body still arriving at the deadline gets its 504 and never reaches a
    worker. One timer per request drives it all (see `_tick`).
    """

    def __init__(self, spec: Spec, scheduler: Scheduler, route: str = "predict", errors: str = "servectl") -> None:
        self.scheduler = scheduler
        self.route = route
        self.errors = errors  # the error shape its clients expect: servectl's, "v2" or "openai"
        self.openai = errors == "openai"  # SSE always, ending with `data: [DONE]`
        self.timeout_s = spec.limits.timeout_s
        self.max_body = int(spec.limits.max_body_mb * 1024 * 1024)
        self.stream = spec.api.stream
        self.format = spec.api.stream_format

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes], rid: str, started: float
    ) -> int:
        """Answer one request; return the status (for logs and metrics)."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return await self._too_large(send, rid)
        pending = self.scheduler.open(rid, self.route, started + self.timeout_s)
        pending.reader = asyncio.current_task()
        first_tick = pending.timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._tick, pending, receive)
        try:
            try:
                body = await read_body(receive, self.max_body)
            except BodyTooLarge:
                return await self._too_large(send, rid)
            except asyncio.CancelledError:
                if not pending.future.done() or pending.reader is None or pending.reader.uncancel():
                    raise  # not our deadline's cancel
                return await self._late_body(send, rid)
            pending.reader = None
            if body is None:
                return CLIENT_GONE
            if pending.timer is not first_tick:  # it ticked while the body came: re-armed for the body
                pending.timer.cancel()
                if time.perf_counter() >= pending.deadline:
                    return await self._late_body(send, rid)
                self._tick(pending, receive)  # now: watch for the client leaving, and the deadline
            try:
                self.scheduler.enqueue(pending, body)
            except QueueFull:
                msg = f"server overloaded: {self.scheduler.max_queue} requests already queued"
                return await self._error(send, 503, msg, rid, "overloaded")
            except NoWorkers as exc:
                return await self._error(send, 503, str(exc), rid, exc.kind)
            status, payload = await pending.future
            if (status, payload) == STREAMING or (status == 200 and not payload):  # chunks, or an empty stream
                if pending.stream is None:
                    pending.stream = asyncio.Queue()
                    pending.stream.put_nowait((200, b""))
                abort = scope.get("extensions", {}).get(ABORT)
                if self.openai:
                    return await send_stream(send, pending, rid, SSE, self._cut(abort), True, _openai_error)
                if self.stream:
                    fmt = pick_format(headers.get(b"accept"), self.format)
                    return await send_stream(send, pending, rid, fmt, self._cut(abort))
                status, payload = await collect(pending)
            if status != CLIENT_GONE:
                if status >= 400:
                    payload = reshape_error(payload, self.errors, status)
                await send_bytes(send, status, payload, rid, RETRY_AFTER if status == 503 else None)
            return status
        finally:
            pending.timer.cancel()
            if pending.watcher is not None:
                pending.watcher.cancel()

    def _cut(self, abort: Callable[[], None] | None) -> Callable[[Pending], None]:
        """What cutting off a stream's slow client does: stop its generation and drop the
        connection at once (a graceful close would wait for the client to read what the
        socket still holds)."""

        def cut(pending: Pending) -> None:
            self.scheduler.cancel(pending)
            if abort is not None:
                abort()

        return cut

    def _tick(self, pending: Pending, receive: Receive) -> None:
        """The request's one timer. While its body is read: the body's deadline. Once it
        waits for a worker (WATCH_AFTER_S after its start, so quick answers never pay for
        it): watch for the client leaving, and expire at the deadline. The deadline and
        the watch stay armed while a stream is sent."""
        loop = asyncio.get_running_loop()
        remaining = pending.deadline - time.perf_counter()
        if pending.reader is not None:  # still reading the body
            if remaining > 0:
                pending.timer = loop.call_later(remaining, self._tick, pending, receive)
                return
            pending.future.set_result((504, b""))  # marks the cancel below as the deadline's
            pending.reader.cancel()
            return
        if pending.future.done() and pending.stream is None:
            return
        if remaining <= 0:
            self._expire(pending)
            return
        pending.timer = loop.call_later(remaining, self._expire, pending)
        if pending.watcher is None:
            pending.watcher = loop.create_task(self._until_disconnect(pending, receive))

    def _expire(self, pending: Pending) -> None:
        msg = f"not answered within limits.timeout_s={self.timeout_s:g}s"
        if pending.stream is not None:  # mid-stream: stop the generation, end with an error event
            self.scheduler.cancel(pending)
            pending.stream.put_nowait((504, error_body(msg + " (was streaming)", pending.request_id, "timeout")))
            return
        if pending.future.done():
            return
        queued = self.scheduler.drop(pending, "timeout")
        if not queued:  # running: stop a generation the worker may have started
            self.scheduler.cancel(pending)
        msg = f"{msg} (was {'queued' if queued else 'running'})"
        pending.future.set_result((504, error_body(msg, pending.request_id, "timeout")))

    async def _until_disconnect(self, pending: Pending, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if pending.stream is not None:  # mid-stream: stop generating for this client
            self.scheduler.cancel(pending)
            pending.stream.put_nowait((CLIENT_GONE, b""))
        elif not pending.future.done():
            if not self.scheduler.drop(pending, "disconnected"):
                self.scheduler.cancel(pending)  # running: stop it, streamed or not
            pending.future.set_result((CLIENT_GONE, b""))

    async def _late_body(self, send: Send, rid: str) -> int:
        """504 for a body still arriving at the deadline; the connection closes (the rest of
        the body is not read), and nothing reached a worker."""
        msg = f"request body not received within limits.timeout_s={self.timeout_s:g}s"
        return await self._error(send, 504, msg, rid, "timeout", _CLOSE)

    async def _too_large(self, send: Send, rid: str) -> int:
        msg = f"request body larger than limits.max_body_mb ({self.max_body} bytes)"
        return await self._error(send, 413, msg, rid, "payload_too_large")

    async def _error(
        self, send: Send, status: int, msg: str, rid: str, kind: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> int:
        extra = RETRY_AFTER if status == 503 else extra
        await send_bytes(send, status, reshape_error(error_body(msg, rid, kind), self.errors, status), rid, extra)
        return status


_OPENAI_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "server_error",
    504: "timeout",
}


def reshape_error(body: bytes, shape: str, status: int = 0) -> bytes:
    """servectl's error body in the shape a protocol's clients expect (cold path: errors only):
    V2 `{"error": "message"}`, OpenAI `{"error": {"message", "type", "param", "code"}}`."""
    if shape == "servectl":
        return body
    try:
        err = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body
    if shape == "v2":
        return orjson.dumps({"error": err["message"], "request_id": err.get("request_id")})
    detail = err.get("detail") or [{}]
    param = ".".join(str(p) for p in detail[0].get("loc", [])) or None
    code = "model_not_found" if err.get("type") == "not_found" else err.get("type")
    kind = _OPENAI_TYPES.get(status, "invalid_request_error" if err.get("type") != "handler_error" else "server_error")
    return orjson.dumps(
        {
            "error": {
                "message": err["message"],
                "type": kind,
                "param": param,
                "code": code,
                "request_id": err.get("request_id"),
            }
        }
    )


def _openai_error(body: bytes) -> bytes:
    return reshape_error(body, "openai")
