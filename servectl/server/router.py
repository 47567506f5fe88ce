"""The router: the model routes' endpoints by path (the edge calls an endpoint directly for
its POST: the lean hot path); another method on a model path is a 405; anything else goes to
FastAPI (probes, info, metrics, docs, protocol metadata), with the request id added."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from servectl import protocols
from servectl.deployment import Deployment
from servectl.outcome import Failure
from servectl.server.asgi import Message, Receive, Scope, Send, send_bytes
from servectl.server.endpoint import ModelEndpoint

if TYPE_CHECKING:
    from servectl.server.edge import Request

_ALLOW_POST = [(b"allow", b"POST")]


class Router:
    def __init__(self, deployment: Deployment, app: FastAPI) -> None:
        spec = deployment.spec
        self.app = app
        self.endpoints = {
            route.path: ModelEndpoint(spec, deployment.scheduler, route, protocols.get(route.protocol))
            for route in protocols.model_routes(spec)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request: Request) -> None:
        """Answer an HTTP request, setting its status."""
        endpoint = request.endpoint
        if endpoint is None:
            request.status = await self._framework(scope, receive, send, request.id)
        elif scope["method"] == "POST":
            request.status = await endpoint(scope, receive, send, request)
        else:
            msg = f"method {scope['method']} not allowed on {scope['path']}: use POST"
            body = endpoint.protocol.error_body(Failure(405, "method_not_allowed", msg), request.id)
            await send_bytes(send, 405, body, request.id, _ALLOW_POST)
            request.status = 405

    async def _framework(self, scope: Scope, receive: Receive, send: Send, rid: str) -> int:
        """Hand a request to FastAPI, adding the request id to its answer."""
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
