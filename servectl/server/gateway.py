"""The ASGI app uvicorn runs: lifespan, request ids, auth, logs and metrics for every
route, then the lean model path or FastAPI for everything else."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI

from servectl.deployment import Deployment
from servectl.errors import error_body
from servectl.logs import AccessLog, access_log
from servectl.routes import model_routes
from servectl.server.asgi import Message, Receive, Scope, Send, header_map, request_id_from, send_bytes
from servectl.server.auth import APIKeyAuth
from servectl.server.endpoint import PredictEndpoint, reshape_error

log = logging.getLogger("servectl")
_UNAUTHORIZED = [(b"www-authenticate", b'Bearer realm="servectl"')]
_KNOWN = frozenset({"/health", "/ready", "/info", "/metrics", "/docs", "/openapi.json", "/redoc", "/v2", "/v1/models"})


class Gateway:
    """Front door: everything every request gets, then the route that answers it."""

    def __init__(self, deployment: Deployment, app: FastAPI) -> None:
        spec = deployment.spec
        self.deployment = deployment
        self.app = app
        self.auth = APIKeyAuth(spec.auth)
        self.model_routes = {
            r.path: PredictEndpoint(spec, deployment.scheduler, route=r.name, errors=r.errors)
            for r in model_routes(spec)
        }
        self.metrics = deployment.metrics
        on = spec.server.access_log and access_log.isEnabledFor(logging.INFO)
        self.access_log = AccessLog(spec.server.log_format) if on else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = header_map(scope)
        rid = request_id_from(headers.get(b"x-request-id"))
        path = scope["path"]
        route = self.model_routes.get(path)
        if self.auth.required(path) and not self.auth.accepts(headers):
            msg = "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
            await send_bytes(send, 401, error_body(msg, rid, "unauthorized"), rid, _UNAUTHORIZED)
            status = 401
        elif route is not None and scope["method"] == "POST":
            content_type = headers.get(b"content-type")
            if content_type and not is_json(content_type):
                status = await self._unsupported_type(send, route, content_type, rid)
            else:
                status = await route(scope, receive, send, headers, rid, started)
        else:
            status = await self._framework(scope, receive, send, rid)
        elapsed = time.perf_counter() - started
        label = path if route is not None or path in _KNOWN else "<other>"
        self.metrics.observe_request(label, status, elapsed)
        if self.access_log is not None:
            self.access_log.add(scope["method"], path, status, elapsed * 1000, rid)

    async def _unsupported_type(self, send: Send, route: PredictEndpoint, content_type: bytes, rid: str) -> int:
        """415 for a body that is not JSON: a form or text/plain POST is a "simple" request a
        browser sends from any web page without a CORS preflight; JSON needs one."""
        name = content_type.decode("latin-1")[:100]
        msg = f"unsupported Content-Type {name!r}: send application/json (or no Content-Type)"
        body = reshape_error(error_body(msg, rid, "unsupported_media_type"), route.errors, 415)
        await send_bytes(send, 415, body, rid)
        return 415

    async def _framework(self, scope: Scope, receive: Receive, send: Send, rid: str) -> int:
        """Hand a non-model request to FastAPI, adding the request id to its answer."""
        status = 500
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        await self.app(scope, receive, send_with_id)
        return status

    async def lifespan(self, receive: Receive, send: Send) -> None:
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


def is_json(content_type: bytes) -> bool:
    """`application/json` or `application/*+json`, parameters (charset) allowed."""
    mime = content_type.split(b";", 1)[0].strip().lower()
    return mime == b"application/json" or (mime.startswith(b"application/") and mime.endswith(b"+json"))
