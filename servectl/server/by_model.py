"""A route several models share (OpenAI's `/v1/...`): the body's `model` field picks the
model, whose endpoint then answers as if the route were its own.

The API process otherwise never parses bodies; here it reads one field with msgspec (which
skips the rest without building it) to route.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import msgspec

from servectl.outcome import CLIENT_GONE, Failure
from servectl.protocols import ApiProtocol, ModelRoute
from servectl.server.asgi import Receive, Scope, Send, read_body, send_bytes
from servectl.server.auth import KeySet, presented_key
from servectl.server.encoding import BodyTooLarge, UnreadableBody, inflater_for
from servectl.server.endpoint import ModelEndpoint

if TYPE_CHECKING:
    from servectl.server.request import Request
    from servectl.server.served import Served

_UNAUTHORIZED = [(b"www-authenticate", b'Bearer realm="servectl"')]
_CLOSE = [(b"connection", b"close")]


class _ModelField(msgspec.Struct):
    model: str | None = None


_decode_model = msgspec.json.Decoder(_ModelField).decode


class ByModel:
    """POST on a shared route: read the body, pick the endpoint of the model it names."""

    model_name = ""  # no model until the body names one (the metrics label is set then)

    def __init__(
        self, route: ModelRoute, protocol: ApiProtocol, endpoints: dict[str, ModelEndpoint], deployment: Served
    ) -> None:
        self.route = route
        self.protocol = protocol
        self.endpoints = endpoints
        self.deployment = deployment
        self._version = -1
        self._configure()

    def _configure(self) -> None:
        """The route's body limit and deadline (the largest of its models'), and the keys the
        edge checks: every model's when they all take just the shared keys (or none); else
        (a model has keys of its own) none, and the chosen model's once the body names it.
        Read again after a reload."""
        endpoints = list(self.endpoints.values())
        self.limit = max(endpoint.max_body for endpoint in endpoints)
        self.timeout = max(endpoint.timeout_s for endpoint in endpoints)
        msg = f"request body larger than limits.max_body_mb ({self.limit} bytes)"
        self.too_large = Failure(413, "payload_too_large", msg)
        own = any(endpoint.own_keys for endpoint in endpoints)
        self._keys = None if own else endpoints[0].keys
        self._version = self.deployment.version

    @property
    def keys(self) -> KeySet | None:
        if self._version != self.deployment.version:
            self._configure()
        return self._keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        rid = request.id
        if self._version != self.deployment.version:
            self._configure()
        limit, timeout = self.limit, self.timeout
        declared = request.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._fail(send, self.too_large, rid)
        inflater = None
        if (encoding := request.headers.get(b"content-encoding")) is not None:  # gzip, deflate: inflated as read
            try:
                inflater = inflater_for(encoding, limit)
            except UnreadableBody as exc:
                return await self._fail(send, exc.failure, rid)
        loop = asyncio.get_running_loop()
        late = _Late(asyncio.current_task())
        timer = loop.call_at(loop.time() + timeout - (time.perf_counter() - request.started), late)
        try:
            body = await read_body(receive, limit, inflater)
        except BodyTooLarge:
            return await self._fail(send, self.too_large, rid)
        except UnreadableBody as exc:
            return await self._fail(send, exc.failure, rid)
        except asyncio.CancelledError:
            if not late.fired or late.task is None or late.task.uncancel():
                raise  # not the deadline's cancel
            msg = f"request body not received within limits.timeout_s={timeout:g}s"
            return await self._fail(send, Failure(504, "timeout", msg), rid, _CLOSE)
        finally:
            timer.cancel()
        if body is None:
            return CLIENT_GONE
        try:
            name = _decode_model(body).model
        except msgspec.DecodeError as exc:
            detail = [{"loc": ["body"], "msg": str(exc), "type": "json_invalid"}]
            return await self._fail(send, Failure(400, "invalid_json", f"malformed JSON: {exc}", detail), rid)
        endpoint = self.endpoints.get(name) if name is not None else None
        if endpoint is None:
            return await self._fail(send, self._unknown(name), rid)
        request.model = endpoint.model_name
        keys = endpoint.keys
        if keys is not None:
            given = presented_key(request.headers)
            if given not in keys:
                msg = "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
                return await self._fail(send, Failure(401, "unauthorized", msg), rid, _UNAUTHORIZED)
            request.key_name = endpoint.auth.name_of(given)  # (the edge could not: no model was named yet)
        return await endpoint.with_body(scope, receive, send, request, body)

    def _unknown(self, name: str | None) -> Failure:
        served = ", ".join(self.endpoints)
        detail = [{"loc": ["body", "model"], "msg": "unknown model", "type": "model_not_found"}]
        if name is None:
            msg = f"'model' is required on {self.route.path}: one of {served}"
            return Failure(400, "invalid_request", msg, detail)
        return Failure(
            404, "not_found", f"The model `{name}` does not exist; {self.route.path} serves: {served}", detail
        )

    async def _fail(
        self, send: Send, failure: Failure, rid: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> int:
        await send_bytes(send, failure.status, self.protocol.error_body(failure, rid), rid, extra)
        return failure.status


class _Late:
    """The body's deadline: cancels the task reading it, and says so."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        if self.task is not None:
            self.task.cancel()
