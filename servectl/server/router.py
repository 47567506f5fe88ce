"""The router: the model routes' endpoints by path (the edge calls an endpoint directly for
its POST: the lean hot path); another method on a model path is a 405; anything else goes to
FastAPI (probes, info, metrics, docs, protocol metadata, admin), with the request id added.

Each model's routes are its own, but for OpenAI's: a route several models serve is one
`ByModel` endpoint that picks the model from the body's `model` field."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from servectl import protocols
from servectl.outcome import Failure
from servectl.protocols import ModelRoute
from servectl.runtime.base import ModelRuntime
from servectl.server.asgi import Message, Receive, Scope, Send, send_bytes
from servectl.server.auth import APIKeyAuth
from servectl.server.by_model import ByModel
from servectl.server.endpoint import ModelEndpoint
from servectl.server.guards import Guards
from servectl.server.served import Served

if TYPE_CHECKING:
    from servectl.server.request import Request

_ALLOW_POST = [(b"allow", b"POST")]
REQUEST_ID = "servectl.request_id"  # the scope key of the request id
Endpoint = ModelEndpoint | ByModel


class RouteClash(Exception):
    """Two models' routes on one path that cannot share it."""


def build_endpoints(deployment: Served, auth: APIKeyAuth, guards: Guards | None = None) -> dict[str, Endpoint]:
    """Every model route's endpoint by path (each model's limits and cache from `guards`)."""
    guards = guards or Guards(deployment.metrics)
    by_path: dict[str, list[tuple[ModelRuntime, ModelRoute]]] = {}
    for model in deployment.models.values():
        for route in protocols.model_routes(model.spec):
            by_path.setdefault(route.path, []).append((model, route))
    endpoints: dict[str, Endpoint] = {}
    for path, served in by_path.items():
        made = {m.name: ModelEndpoint(m, r, protocols.get(r.protocol), auth, guards) for m, r in served}
        if len(served) == 1:
            endpoints[path] = next(iter(made.values()))
            continue
        kinds = {(r.name, r.protocol) for _, r in served}
        if len(kinds) != 1 or served[0][1].protocol != "openai":
            names = ", ".join(f"{m.name} ({r.protocol} {r.name})" for m, r in served)
            raise RouteClash(f"{path} is a route of several models that cannot share it: {names}")
        route = served[0][1]
        endpoints[path] = ByModel(route, protocols.get(route.protocol), made, deployment)
    return endpoints


class Router:
    def __init__(self, deployment: Served, app: FastAPI, auth: APIKeyAuth) -> None:
        self.app = app
        self.guards = Guards(deployment.metrics)  # each model's rate limiter and cache
        self.endpoints = build_endpoints(deployment, auth, guards=self.guards)

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

        scope[REQUEST_ID] = rid  # for FastAPI routes that write it in an error body
        if scope["method"] == "HEAD":  # GET's answer (FastAPI's GET routes take no HEAD); the
            # server keeps HEAD in its own scope, so it sends the head and never the body
            await self.app({**scope, "method": "GET"}, receive, send_with_id)
        else:
            await self.app(scope, receive, send_with_id)
        return status
