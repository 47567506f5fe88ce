"""The model route: raw body in, queued for a worker, raw worker answer out.

This is the hot path. It stays on plain ASGI (no FastAPI request objects, no parsing:
workers parse) and applies the deadline, back-pressure and client disconnects.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from servectl.errors import error_body
from servectl.runtime.scheduler import STREAMING, Answer, NoWorkers, Pending, QueueFull, Scheduler
from servectl.server.asgi import BodyTooLarge, Receive, Send, read_body, send_bytes
from servectl.server.streams import SSE, collect, pick_format, send_stream
from servectl.spec import Spec

RETRY_AFTER = [(b"retry-after", b"1")]
CLIENT_GONE = 499  # nginx's code: logged and counted, never sent
WATCH_AFTER_S = 0.02


class PredictEndpoint:
    """`POST {api.path}`: one request through the scheduler to a worker and back."""

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
        self, receive: Receive, send: Send, headers: dict[bytes, bytes], rid: str, started: float
    ) -> int:
        """Answer one request; return the status (for logs and metrics)."""
        declared = headers.get(b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                raise BodyTooLarge
            body = await read_body(receive, self.max_body)
        except BodyTooLarge:
            msg = f"request body larger than limits.max_body_mb ({self.max_body} bytes)"
            return await self._error(send, 413, msg, rid, "payload_too_large")
        if body is None:
            return CLIENT_GONE
        try:
            pending = self.scheduler.submit(rid, body, self.route)
        except QueueFull:
            msg = f"server overloaded: {self.scheduler.max_queue} requests already queued"
            return await self._error(send, 503, msg, rid, "overloaded")
        except NoWorkers as exc:
            return await self._error(send, 503, str(exc), rid, "unavailable")
        try:
            status, payload = await self._wait(pending, receive, started)
            if (status, payload) == STREAMING or (status == 200 and not payload):  # chunks, or an empty stream
                if pending.stream is None:
                    pending.stream = asyncio.Queue()
                    pending.stream.put_nowait((200, b""))
                if self.openai:
                    return await send_stream(send, pending, rid, SSE, done=True, error_shape=_openai_error)
                if self.stream:
                    return await send_stream(send, pending, rid, pick_format(headers.get(b"accept"), self.format))
                status, payload = await collect(pending)
            if status != CLIENT_GONE:
                if status >= 400:
                    payload = reshape_error(payload, self.errors, status)
                await send_bytes(send, status, payload, rid, RETRY_AFTER if status == 503 else None)
            return status
        finally:
            if pending.timer is not None:
                pending.timer.cancel()
            if pending.watcher is not None:
                pending.watcher.cancel()

    async def _wait(self, pending: Pending, receive: Receive, started: float) -> Answer:
        """The worker's answer (or STREAMING), a 504 at the deadline, or CLIENT_GONE.

        Watching for a disconnect costs a task per request, so it starts only once a request
        has waited WATCH_AFTER_S: quick answers never pay for it, slow ones are watched.
        The deadline and the watch stay armed while a stream is sent.
        """
        loop = asyncio.get_running_loop()
        remaining = max(self.timeout_s - (time.perf_counter() - started), 0.0)
        if remaining > WATCH_AFTER_S:
            pending.timer = loop.call_later(WATCH_AFTER_S, self._watch, pending, receive, remaining - WATCH_AFTER_S)
        else:
            pending.timer = loop.call_later(remaining, self._expire, pending)
        return await pending.future

    def _watch(self, pending: Pending, receive: Receive, remaining: float) -> None:
        loop = asyncio.get_running_loop()
        pending.timer = loop.call_later(remaining, self._expire, pending)
        pending.watcher = loop.create_task(self._until_disconnect(pending, receive))

    def _expire(self, pending: Pending) -> None:
        msg = f"not answered within limits.timeout_s={self.timeout_s:g}s"
        if pending.stream is not None:  # mid-stream: stop the generation, end with an error event
            self.scheduler.cancel_stream(pending)
            pending.stream.put_nowait((504, error_body(msg + " (was streaming)", pending.request_id, "timeout")))
            return
        if pending.future.done():
            return
        where = "queued" if self.scheduler.drop(pending, "timeout") else "running"
        msg = f"{msg} (was {where})"
        pending.future.set_result((504, error_body(msg, pending.request_id, "timeout")))

    async def _until_disconnect(self, pending: Pending, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if pending.stream is not None:  # mid-stream: stop generating for this client
            self.scheduler.cancel_stream(pending)
            pending.stream.put_nowait((CLIENT_GONE, b""))
        elif not pending.future.done():
            self.scheduler.drop(pending, "disconnected")
            pending.future.set_result((CLIENT_GONE, b""))

    async def _error(self, send: Send, status: int, msg: str, rid: str, kind: str) -> int:
        extra = RETRY_AFTER if status == 503 else None
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
