"""A model route's endpoint: raw body in, queued for a worker, its typed outcome out in the
route protocol's shape.

This is the hot path. It stays on plain ASGI (no FastAPI request objects, no parsing:
workers parse) and applies the deadline, back-pressure and client disconnects.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from servectl.outcome import CLIENT_GONE, ENDED, Ended, Failure, Outcome, Reply, Streaming
from servectl.protocols import ApiProtocol, ModelRoute
from servectl.runtime.base import ModelRuntime
from servectl.runtime.scheduler import NoWorkers, Pending, QueueFull
from servectl.server.asgi import JSON, Receive, Scope, Send, adding_headers, read_body, send_bytes
from servectl.server.auth import APIKeyAuth, KeySet
from servectl.server.deadlines import DeadlineWatch, FirstTicks
from servectl.server.encoding import (
    VARY,
    BodyTooLarge,
    Inflater,
    UnreadableBody,
    answer_coding,
    compressed,
    inflater_for,
)
from servectl.server.guards import Guards
from servectl.server.http import ABORT
from servectl.server.streams import SSE, collect, pick_format, send_stream
from servectl.spec import Spec

if TYPE_CHECKING:
    from servectl.server.request import Request

RETRY_AFTER = [(b"retry-after", b"1")]
_HIT = [(b"x-cache", b"hit")]
_MISS = [(b"x-cache", b"miss")]
_CLOSE = [(b"connection", b"close")]  # the rest of an unread body is not worth reading
_OCTETS = b"application/octet-stream"


class ModelEndpoint:
    """`POST` on a model route: one request through the scheduler to a worker and back.

    The deadline (`limits.timeout_s`) counts from the request's start, so reading the body
    counts too: a body still arriving at the deadline gets its 504 and never reaches a
    worker. One timer per request drives it all (see `deadlines.DeadlineWatch.tick`).
    """

    def __init__(
        self, model: ModelRuntime, route: ModelRoute, protocol: ApiProtocol, auth: APIKeyAuth, guards: Guards
    ) -> None:
        self.model = model
        self.guards = guards
        self.model_name = model.name
        self.scheduler = model.scheduler
        self.route = route
        self.protocol = protocol  # formats its errors; OpenAI's streams are always SSE with [DONE]
        self.relay = protocol.relay(route, model.name)  # /v1/responses: history in, responses kept
        self.auth = auth
        self.watch = DeadlineWatch(self.scheduler)
        self.first_ticks = FirstTicks(self.watch.tick)
        self._configure(model.spec)

    def _configure(self, spec: Spec) -> None:
        """Read the model's limits and keys (again after a reload)."""
        self.spec = spec
        self.timeout_s = self.watch.timeout_s = spec.limits.timeout_s
        self.max_body = int(spec.limits.max_body_mb * 1024 * 1024)
        self.stream = spec.api.stream
        self.format = spec.api.stream_format
        self.own_keys = bool(spec.own_api_keys)  # (read once: a pydantic private attribute is slow)
        self._keys = self.auth.for_model(spec.own_api_keys)
        self.limiter = self.guards.limiter(spec)
        streams = spec.api.stream and self.route.name == "predict"  # its answers are streams: never kept
        self.cache = None if streams else self.guards.cache(spec)
        # (a relayed route takes this path too: the express lane skips it)
        self.guarded = self.limiter is not None or self.cache is not None or self.relay is not None
        gzip_min = spec.server.gzip_min_bytes  # answers this large are compressed for a client that takes it
        self.gzip_min = sys.maxsize if gzip_min is None else gzip_min

    def refresh(self) -> None:
        """Take the model's limits and keys again if it was reloaded."""
        if self.model.spec is not self.spec:
            self._configure(self.model.spec)

    @property
    def keys(self) -> KeySet | None:
        """The keys its route accepts (None: open)."""
        self.refresh()
        return self._keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        """Answer one request; return the status (for logs and metrics)."""
        self.refresh()
        if self.guarded:
            return await self._guarded(scope, receive, send, request, None)
        return await self._read_and_answer(scope, receive, send, request)

    async def _read_and_answer(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        rid = request.id
        declared = request.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return await self._too_large(send, rid)
        inflater: Inflater | None = None
        if (encoding := request.headers.get(b"content-encoding")) is not None:  # gzip, deflate: inflated as read
            try:
                inflater = inflater_for(encoding, self.max_body)
            except UnreadableBody as exc:
                return await self._fail(send, exc.failure, rid)
        pending = self.scheduler.open(rid, self.route.name, request.started + self.timeout_s)
        pending.reader = asyncio.current_task(pending.future.get_loop())  # (without the loop: a getpid call)
        self.first_ticks.add(pending, receive)
        try:
            try:
                body = await read_body(receive, self.max_body, inflater)
            except BodyTooLarge:
                return await self._too_large(send, rid, inflater is not None)
            except UnreadableBody as exc:
                return await self._fail(send, exc.failure, rid)
            except asyncio.CancelledError:
                if not pending.future.done() or pending.reader is None or pending.reader.uncancel():
                    raise  # not our deadline's cancel
                return await self._late_body(send, rid)
            pending.reader = None
            if body is None:
                return CLIENT_GONE
            if pending.timer is not None:  # it ticked while the body came: re-armed for the body
                pending.timer.cancel()
                if time.perf_counter() >= pending.deadline:
                    return await self._late_body(send, rid)
                self.watch.tick(pending, receive)  # now: watch for the client leaving, and the deadline
            return await self._answer(scope, receive, send, request, pending, body)
        finally:
            self.first_ticks.settle(pending)

    async def with_body(self, scope: Scope, receive: Receive, send: Send, request: Request, body: bytes) -> int:
        """Answer a request whose body was already read (a shared route read it to pick the model)."""
        self.refresh()
        if self.guarded:
            return await self._guarded(scope, receive, send, request, body)
        return await self._answer_read(scope, receive, send, request, body)

    async def _answer_read(self, scope: Scope, receive: Receive, send: Send, request: Request, body: bytes) -> int:
        if len(body) > self.max_body:
            return await self._too_large(send, request.id)
        pending = self.scheduler.open(request.id, self.route.name, request.started + self.timeout_s)
        if time.perf_counter() >= pending.deadline:
            return await self._late_body(send, request.id)
        self.first_ticks.add(pending, receive)
        try:
            return await self._answer(scope, receive, send, request, pending, body)
        finally:
            self.first_ticks.settle(pending)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, request: Request, body: bytes | None) -> int:
        """The answer under the model's rate limit: refused (429) while its key's budget is
        spent; its tokens charged once it is answered; the limit's headers on the answer."""
        if self.limiter is None:
            return await self._unguarded(scope, receive, send, request, body)
        name = request.key_name
        refusal, headers = await self.limiter.take(name)
        if refusal is not None:
            return await self._fail(send, refusal, request.id, headers)
        try:
            return await self._unguarded(scope, receive, adding_headers(send, headers), request, body)
        finally:
            if request.pending is not None:
                await self.limiter.charge(name, request.pending.prompt_tokens + request.pending.completion_tokens)

    async def _unguarded(self, scope: Scope, receive: Receive, send: Send, request: Request, body: bytes | None) -> int:
        if body is None:
            return await self._read_and_answer(scope, receive, send, request)
        return await self._answer_read(scope, receive, send, request, body)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, request: Request, pending: Pending, body: bytes
    ) -> int:
        """Queue the request for a worker (or answer it from the cache) and send its outcome."""
        rid = request.id
        request.pending = pending
        if self.relay is not None:
            relayed = self.relay.prepare(body)
            if isinstance(relayed, Failure):
                return await self._fail(send, relayed, rid)
            body, request.keep = relayed.body, relayed.keep
        framing = self.protocol.framing_header
        if framing is not None and (declared := request.headers.get(framing)) is not None:
            if not declared.isdigit() or int(declared) > len(body):
                msg = f"{framing.decode()} must be the length of the body's JSON part: at most {len(body)} bytes"
                return await self._fail(send, Failure(400, "bad_request", msg), rid)
            pending.json_length = int(declared)
        elif self.cache is not None and (key := self.cache.key(self.route.name, body)) is not None:
            return await self._cached(scope, receive, send, request, pending, body, key)
        return await self._compute(scope, receive, send, request, pending, body)

    async def _cached(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: Request,
        pending: Pending,
        body: bytes,
        key: str,
    ) -> int:
        """A cacheable request: the cached answer, else computed (once for identical
        requests arriving together) and kept. `Cache-Control: no-cache` recomputes."""
        assert self.cache is not None
        if b"no-cache" in request.headers.get(b"cache-control", b""):
            self.cache.count("bypass")
            led = False
        else:
            hit, led = await self.cache.lookup(key, pending.future)
            if hit is not None:
                self.cache.count("hit")
                if request.keep is not None:
                    request.keep(hit.body)
                return await self._send_reply(send, hit, request, _HIT)
            self.cache.count("miss")
        reply = None
        try:
            status = await self._compute(scope, receive, adding_headers(send, _MISS), request, pending, body)
            outcome = pending.future.result() if pending.future.done() else None
            reply = outcome if type(outcome) is Reply and status == 200 else None
            return status
        finally:
            await self.cache.finish(key, reply, led)

    async def _send_reply(self, send: Send, reply: Reply, request: Request, extra: list[tuple[bytes, bytes]]) -> int:
        """A reply: JSON, or JSON then binary (V2's binary tensor data, its JSON's length in a
        header); compressed when it has `server.gzip_min_bytes` or more and the client takes
        gzip or deflate (`Accept-Encoding`)."""
        body, headers, content_type = reply.body, extra, JSON
        if reply.json_length is not None:
            headers = [(b"inference-header-content-length", str(reply.json_length).encode()), *headers]
            content_type = _OCTETS
        if len(body) >= self.gzip_min and (coding := answer_coding(request.headers.get(b"accept-encoding"))):
            body = await compressed(body, coding)
            headers = [*headers, (b"content-encoding", coding), VARY]
        await send_bytes(send, 200, body, request.id, headers or None, content_type)
        return 200

    async def _compute(
        self, scope: Scope, receive: Receive, send: Send, request: Request, pending: Pending, body: bytes
    ) -> int:
        refusal = self.queue(pending, body)
        if refusal is not None:
            return await self._fail(send, refusal, request.id)
        return await self.send_outcome(scope, send, request, pending, await pending.future)

    def start(self, request: Request, body: bytes, receive: Receive) -> Pending:
        """Open and queue a request whose body is all in, with no task to await it (the
        express lane): its future ends with the worker's outcome, the scheduler's refusal,
        the deadline's 504 or the client's leaving; `first_ticks.settle` once it is answered."""
        pending = self.scheduler.open(request.id, self.route.name, request.started + self.timeout_s)
        request.pending = pending
        refusal = self.queue(pending, body)
        if refusal is None:
            self.first_ticks.add(pending, receive)
        else:
            pending.future.set_result(refusal)  # answered as any other outcome
        return pending

    def queue(self, pending: Pending, body: bytes) -> Failure | None:
        """Queue the request for a worker; the 503 when the scheduler refuses it."""
        try:
            if not pending.future.done():  # done: its deadline or client went while it waited for the cache
                self.scheduler.enqueue(pending, body)
        except QueueFull:
            msg = f"server overloaded: {self.scheduler.max_queue} requests already queued"
            return Failure(503, "overloaded", msg)
        except NoWorkers as exc:
            return Failure(503, exc.kind, str(exc))
        return None

    async def send_outcome(self, scope: Scope, send: Send, request: Request, pending: Pending, outcome: Outcome) -> int:
        """Send what the worker answered: a reply, a stream, or an error."""
        rid = request.id
        if type(outcome) is Reply:  # the common answer, first
            if request.keep is not None:
                request.keep(outcome.body)
            if outcome.json_length is None and len(outcome.body) < self.gzip_min:
                await send_bytes(send, 200, outcome.body, rid)
                return 200
            return await self._send_reply(send, outcome, request, [])  # framed (V2's binary data), or large
        if isinstance(outcome, Streaming | Ended):  # chunks, or a stream that ended without any
            if pending.stream is None:  # it ended before any chunk
                pending.stream = asyncio.Queue()
                pending.stream.put_nowait(ENDED)
            abort = scope.get("extensions", {}).get(ABORT)
            if self.protocol.sse_only:
                cut = self._cut(abort)
                return await send_stream(send, pending, rid, SSE, cut, self.protocol, done=True, observe=request.keep)
            if self.stream:
                fmt = pick_format(request.headers.get(b"accept"), self.format)
                return await send_stream(send, pending, rid, fmt, self._cut(abort), self.protocol)
            outcome = await collect(pending)
        if isinstance(outcome, Reply):
            return await self._send_reply(send, outcome, request, [])
        if isinstance(outcome, Failure):
            return await self._fail(send, outcome, rid)
        return CLIENT_GONE

    def _cut(self, abort: Callable[[], None] | None) -> Callable[[Pending], None]:
        """What cutting off a stream's slow client does: stop its generation and drop the
        connection at once (a graceful close would wait for the client to read what the
        socket still holds)."""

        def cut(pending: Pending) -> None:
            self.scheduler.cancel(pending)
            if abort is not None:
                abort()

        return cut

    async def _late_body(self, send: Send, rid: str) -> int:
        """504 for a body still arriving at the deadline; the connection closes (the rest of
        the body is not read), and nothing reached a worker."""
        msg = f"request body not received within limits.timeout_s={self.timeout_s:g}s"
        return await self._fail(send, Failure(504, "timeout", msg), rid, _CLOSE)

    async def _too_large(self, send: Send, rid: str, inflated: bool = False) -> int:
        msg = f"request body larger than limits.max_body_mb ({self.max_body} bytes)"
        if inflated:
            msg += " once decompressed"
        return await self._fail(send, Failure(413, "payload_too_large", msg), rid)

    async def _fail(
        self, send: Send, failure: Failure, rid: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> int:
        """Send an error in the route protocol's shape (with Retry-After when worth retrying)."""
        if failure.retry and not extra:
            extra = RETRY_AFTER
        await send_bytes(send, failure.status, self.protocol.error_body(failure, rid), rid, extra)
        return failure.status
