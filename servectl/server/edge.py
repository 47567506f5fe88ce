"""The edge: what every HTTP request gets, as small pieces around one router (Starlette's
style), composed once in `build_edge`:

    Lifespan -> RequestContext -> RecordMetrics -> WriteAccessLog -> RequireKey -> RequireJson -> Router

`RequestContext` gives each request a `Request` record (its id, start, headers, the model
route it targets, and the status it got) under `scope["servectl.request"]`; the inner
pieces read it instead of parsing the scope again, and the ones that observe the answer
read `status` after the inner app returned. Header limits and the connection cap live a
layer below, in the HTTP protocol (`protocol.py`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from servectl import protocols
from servectl.deployment import Deployment
from servectl.logs import AccessLog, access_log
from servectl.metrics import Metrics
from servectl.outcome import Failure
from servectl.server.asgi import REQUEST, App, Receive, Scope, Send, request_id_from, send_bytes
from servectl.server.auth import APIKeyAuth
from servectl.server.router import Router

if TYPE_CHECKING:
    from fastapi import FastAPI

    from servectl.server.endpoint import ModelEndpoint

_UNAUTHORIZED = [(b"www-authenticate", b'Bearer realm="servectl"')]
_FIXED = frozenset({"/health", "/ready", "/info", "/metrics", "/docs", "/openapi.json", "/redoc"})


class Request:
    """One HTTP request as the edge pieces see it."""

    __slots__ = ("endpoint", "headers", "id", "started", "status")

    def __init__(self, scope: Scope, endpoint: ModelEndpoint | None) -> None:
        self.started = time.perf_counter()
        self.headers: dict[bytes, bytes] = dict(scope["headers"])  # ASGI servers lower-case names
        self.id = request_id_from(self.headers.get(b"x-request-id"))
        self.endpoint = endpoint  # the model route it targets, if any
        self.status = 500  # until an answer says otherwise


class Lifespan:
    """Starts the workers with the server and stops them after the last answer."""

    def __init__(self, app: App, deployment: Deployment, access_log: AccessLog | None) -> None:
        self.app = app
        self.deployment = deployment
        self.access_log = access_log  # flushed after the last answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.deployment.supervisor.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.deployment.supervisor.stop()
                if self.access_log is not None:
                    self.access_log.close()  # uvicorn has answered every request by now
                await send({"type": "lifespan.shutdown.complete"})
                return


class RequestContext:
    """Gives each HTTP request its `Request` record (id, start, headers, model route)."""

    def __init__(self, app: App, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[REQUEST] = Request(scope, self.router.endpoints.get(scope["path"]))
        await self.app(scope, receive, send)


class RecordMetrics:
    """Counts each answer by path (model and fixed paths by name, the rest as `<other>`),
    status and duration."""

    def __init__(self, app: App, metrics: Metrics, fixed_paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.fixed = _FIXED | fixed_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        request: Request | None = scope.get(REQUEST)
        if request is not None:
            path = scope["path"]
            label = path if request.endpoint is not None or path in self.fixed else "<other>"
            self.metrics.observe_request(label, request.status, time.perf_counter() - request.started)


class WriteAccessLog:
    """One access-log line per answer (buffered: see `logs.AccessLog`)."""

    def __init__(self, app: App, log: AccessLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        request: Request | None = scope.get(REQUEST)
        if request is not None:
            elapsed_ms = (time.perf_counter() - request.started) * 1000
            self.log.add(scope["method"], scope["path"], request.status, elapsed_ms, request.id)


class RequireKey:
    """401 for a request without a valid API key, on every path that needs one."""

    def __init__(self, app: App, auth: APIKeyAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request: Request | None = scope.get(REQUEST)
        if request is None or not self.auth.required(scope["path"]) or self.auth.accepts(request.headers):
            await self.app(scope, receive, send)
            return
        msg = "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
        body = protocols.get("predict").error_body(Failure(401, "unauthorized", msg), request.id)
        await send_bytes(send, 401, body, request.id, _UNAUTHORIZED)
        request.status = 401


class RequireJson:
    """415 for a model route's body that is not JSON: a form or text/plain POST is a "simple"
    request a browser sends from any web page without a CORS preflight; JSON needs one."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request: Request | None = scope.get(REQUEST)
        content_type = request.headers.get(b"content-type") if request is not None else None
        if request is None or request.endpoint is None or not content_type or is_json(content_type):
            await self.app(scope, receive, send)
            return
        name = content_type.decode("latin-1")[:100]
        msg = f"unsupported Content-Type {name!r}: send application/json (or no Content-Type)"
        body = request.endpoint.protocol.error_body(Failure(415, "unsupported_media_type", msg), request.id)
        await send_bytes(send, 415, body, request.id)
        request.status = 415


def is_json(content_type: bytes) -> bool:
    """`application/json` or `application/*+json`, parameters (charset) allowed."""
    mime = content_type.split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or (mime.startswith(b"application/") and mime.endswith(b"+json"))


def build_edge(deployment: Deployment, app: FastAPI) -> Lifespan:
    """The ASGI app uvicorn runs."""
    spec = deployment.spec
    router = Router(deployment, app)
    edge: App = RequireJson(router)
    edge = RequireKey(edge, APIKeyAuth(spec.auth, protocols.open_paths(spec)))
    logged = spec.server.access_log and access_log.isEnabledFor(logging.INFO)
    log = AccessLog(spec.server.log_format) if logged else None
    if log is not None:
        edge = WriteAccessLog(edge, log)
    edge = RecordMetrics(edge, deployment.metrics, protocols.fixed_paths(spec))
    edge = RequestContext(edge, router)
    return Lifespan(edge, deployment, log)
