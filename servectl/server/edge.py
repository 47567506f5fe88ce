"""The edge: what every HTTP request gets, as small pieces around one router, composed once
in `build_edge`:

    RequestContext ─ checks (RequireKey, RequireJson) ─▶ endpoint | Router ─▶ observers (RecordMetrics, WriteAccessLog)

`RequestContext` gives each request a `Request` record (its id, start, headers, the model
route it targets, the status it got). A check looks at the record before the router and may
refuse the request with an answer; an observer sees the record after the answer. Pieces are
plain callables, not nested ASGI apps: the hot path pays one coroutine for the edge, not one
per piece. Header limits and the connection cap live a layer below, in the HTTP protocol
(`http/`); the lifespan (workers up, workers down) is `Lifespan`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from servectl.logs import AccessLog, access_log
from servectl.metrics import Metrics
from servectl.outcome import Failure
from servectl.server.asgi import Receive, Scope, Send, send_bytes
from servectl.server.auth import ACCESS, ADMIN_PREFIX, Access, APIKeyAuth, presented_key
from servectl.server.request import Check, Observer, Refusal, Request
from servectl.server.router import Router
from servectl.server.served import Served

if TYPE_CHECKING:
    from fastapi import FastAPI

    from servectl.protocols import ApiProtocol
    from servectl.server.guards import Guards
    from servectl.server.tracing import TraceRequests

_UNAUTHORIZED = [(b"www-authenticate", b'Bearer realm="servectl"')]
_OCTETS = b"application/octet-stream"
_FIXED = frozenset({"/health", "/ready", "/info", "/stats", "/metrics", "/docs", "/openapi.json", "/redoc"})


class RequireKey:
    """401 for a request without a valid key, on every path that needs one: a model route
    takes the shared keys and the model's own, `/admin/...` only admin keys (403 while
    `auth.admin_keys` is unset), any other path any key, scoped to what the key may see: a
    model's own GET paths (V2 metadata, statistics) need a key that opens that model, a
    protocol's shared paths (`/v1/models`, `/v2`) one that opens a model served with it.
    The caller's `Access` goes into the scope for the routes FastAPI answers (/stats, /info,
    /metrics, /v1/models show what it may see)."""

    def __init__(self, auth: APIKeyAuth, deployment: Served) -> None:
        self.auth = auth
        served = self.protocols = deployment.protocols
        self.shape = served.default
        self.specs = deployment.spec.models
        self.model_paths = {
            path: spec.name
            for spec in self.specs
            for protocol in served.of(spec)
            for path in protocol.model_paths(spec)
        }
        self.by_prefix = {
            protocol.path_prefix: frozenset(s.name for s in self.specs if protocol in served.of(s))
            for protocol in served.all
            if protocol.path_prefix
        }

    def __call__(self, scope: Scope, request: Request) -> Refusal | None:
        endpoint = request.endpoint
        if endpoint is not None:  # (the hot path: a model route)
            keys = endpoint.keys
            if keys is None:
                return None
            given = presented_key(request.headers)
            if given in keys:
                request.key_name = self.auth.name_of(given)
                return None
            return self._refuse(endpoint.protocol)
        path = scope["path"]
        if path.startswith(ADMIN_PREFIX):
            return self._admin(request)
        if not self.auth.required(path):
            return None
        access = self.auth.access(presented_key(request.headers))
        if access is not None and self._sees(path, access):
            scope[ACCESS] = access
            return None
        return self._refuse(self.protocols.shape_for(path))

    @staticmethod
    def _refuse(shape: ApiProtocol) -> Refusal:
        msg = "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
        return Refusal(Failure(401, "unauthorized", msg), shape, _UNAUTHORIZED)

    def _sees(self, path: str, access: Access) -> bool:
        """Whether a key that opens `access.models` may call `path` (not a model route)."""
        if access.models is None:
            return True
        model = self.model_paths.get(path)
        if model is not None:
            return model in access.models
        for prefix, models in self.by_prefix.items():
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return not models.isdisjoint(access.models)
        return True

    def _admin(self, request: Request) -> Refusal | None:
        """Admin keys only; while there are none, 403 to whoever may use the API (anyone
        else gets the 401 every protected path gives)."""
        given = presented_key(request.headers)
        if self.auth.admin is not None and given in self.auth.admin:
            return None
        if self.auth.admin is None and (not self.auth.required(ADMIN_PREFIX) or self.auth.access(given) is not None):
            msg = "admin routes are off: set auth.admin_keys to use them"
            return Refusal(Failure(403, "forbidden", msg), self.shape)
        msg = "missing or wrong admin key: send 'Authorization: Bearer KEY' with one of auth.admin_keys"
        return Refusal(Failure(401, "unauthorized", msg), self.shape, _UNAUTHORIZED)


def require_json(scope: Scope, request: Request) -> Refusal | None:
    """415 for a model route's body that is not JSON: a form or text/plain POST is a "simple"
    request a browser sends from any web page without a CORS preflight; JSON needs one."""
    content_type = request.headers.get(b"content-type")
    if request.endpoint is None or not content_type or is_json(content_type):
        return None
    framing = request.endpoint.protocol.framing_header
    mime = content_type.lower()
    if framing is not None and (framing in request.headers or mime.startswith(_OCTETS)):
        # JSON then binary, as its protocol allows (V2's binary tensor data); Triton's
        # clients also send JSON alone as application/octet-stream (no browser sends that
        # without a preflight)
        return None
    name = content_type.decode("latin-1")[:100]
    msg = f"unsupported Content-Type {name!r}: send application/json (or no Content-Type)"
    if mime.startswith(b"application/x-www-form-urlencoded"):
        msg += "; `curl -d` sends a form's: add -H 'Content-Type: application/json', or use `curl --json`"
    return Refusal(Failure(415, "unsupported_media_type", msg), request.endpoint.protocol)


def is_json(content_type: bytes) -> bool:
    """`application/json` or `application/*+json`, parameters (charset) allowed."""
    if content_type == b"application/json":
        return True
    mime = content_type.split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or (mime.startswith(b"application/") and mime.endswith(b"+json"))


class RecordMetrics:
    """Counts each answer by path (model and fixed paths by name, the rest as `<other>`),
    status and duration."""

    def __init__(self, metrics: Metrics, fixed_paths: frozenset[str]) -> None:
        self.metrics = metrics
        self.fixed = _FIXED | fixed_paths

    def __call__(self, scope: Scope, request: Request) -> None:
        path = scope["path"]
        label = path if request.endpoint is not None or path in self.fixed else "<other>"
        self.metrics.observe_request(request.model, label, request.status, request.elapsed)


class RecordKeyMetrics:
    """Counts each model's answers and tokens by the name of the key they came with
    (`auth.key_name_metrics` only: key names are tenants, kept out of metrics unless asked)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def __call__(self, scope: Scope, request: Request) -> None:
        if request.endpoint is None or not request.model:
            return
        pending = request.pending
        prompt, completion = (pending.prompt_tokens, pending.completion_tokens) if pending is not None else (0, 0)
        self.metrics.observe_key(request.model, request.key_name, request.status, prompt, completion)


class WriteAccessLog:
    """One access-log line per answer (buffered: see `logs.AccessLog`)."""

    def __init__(self, log: AccessLog) -> None:
        self.log = log

    def __call__(self, scope: Scope, request: Request) -> None:
        self.log.add(scope["method"], scope["path"], request.status, request.elapsed * 1000, request.id)


class RequestContext:
    """The ASGI app uvicorn runs. Each HTTP request: its record, the checks, the model route's
    endpoint (or the router for everything else), the observers. The lifespan goes to
    `Lifespan`."""

    def __init__(
        self, router: Router, checks: Sequence[Check], observers: Sequence[Observer], lifespan: Lifespan
    ) -> None:
        self.router = router
        self.checks = tuple(checks)
        self.observers = tuple(observers)
        self.lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.lifespan(receive, send)
            else:
                await self.router.app(scope, receive, send)
            return
        request = Request(scope, self.router.endpoints.get(scope["path"]))
        for check in self.checks:
            refusal = check(scope, request)
            if refusal is not None:
                body = refusal.protocol.error_body(refusal.failure, request.id)
                await send_bytes(send, refusal.failure.status, body, request.id, refusal.extra)
                request.status = refusal.failure.status
                break
        else:
            endpoint = request.endpoint
            if endpoint is not None and scope["method"] == "POST":  # the hot path, called directly
                request.status = await endpoint(scope, receive, send, request)
            else:
                await self.router(scope, receive, send, request)
        self.observe(scope, request)

    def observe(self, scope: Scope, request: Request) -> None:
        """The request is answered: its time, then every observer."""
        request.elapsed = time.perf_counter() - request.started
        for observe in self.observers:
            observe(scope, request)

    @property
    def access_log(self) -> AccessLog | None:
        return self.lifespan.access_log


class Lifespan:
    """Starts the workers with the server and stops them after the last answer."""

    def __init__(
        self,
        deployment: Served,
        access_log: AccessLog | None,
        tracing: TraceRequests | None = None,
        guards: Guards | None = None,
    ):
        self.deployment = deployment
        self.guards = guards  # closed (Redis connections) after the last answer
        self.access_log = access_log  # flushed after the last answer
        self.tracing = tracing  # its last spans sent after the last answer

    async def __call__(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.deployment.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.deployment.stop()
                if self.guards is not None:
                    await self.guards.close()
                if self.access_log is not None:
                    self.access_log.close()  # uvicorn has answered every request by now
                if self.tracing is not None:
                    self.tracing.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_edge(deployment: Served, app: FastAPI) -> RequestContext:
    """The ASGI app uvicorn runs."""
    spec = deployment.spec
    auth = APIKeyAuth(spec.auth, deployment.protocols.open_paths)
    auth.follow(deployment)  # its models' own keys, after a reload too
    checks: list[Check] = [RequireKey(auth, deployment), require_json]
    observers: list[Observer] = [
        RecordMetrics(deployment.metrics, deployment.protocols.fixed_paths),
        deployment.usage,  # /stats
    ]
    if spec.auth.key_name_metrics:  # key names (tenants) as labels: only when the spec asks
        observers.append(RecordKeyMetrics(deployment.metrics))
    logged = spec.server.access_log and access_log.isEnabledFor(logging.INFO)
    log = AccessLog(spec.server.log_format) if logged else None
    if log is not None:
        observers.append(WriteAccessLog(log))
    tracing = None
    if spec.server.tracing.otlp_endpoint:
        from servectl.server.tracing import TraceRequests  # the `otel` extra: imported only when on

        tracing = TraceRequests(spec.server.tracing)
        observers.append(tracing)
    router = Router(deployment, app, auth)
    return RequestContext(router, checks, observers, Lifespan(deployment, log, tracing, router.guards))
