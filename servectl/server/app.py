"""The FastAPI app: probes, info, metrics, docs and the OpenAPI document.

Model routes are served by the lean ASGI path in `gateway.py`; they are declared here too
so that `/docs` and `/openapi.json` describe them with the schemas workers report.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Body, FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from servectl import __version__
from servectl.deployment import Deployment

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "detail": {},
            },
            "required": ["type", "message", "request_id"],
        }
    },
    "required": ["error"],
}
_ERRORS = {
    "400": "Malformed JSON",
    "401": "Missing or wrong API key",
    "413": "Body larger than limits.max_body_mb",
    "422": "Request failed validation",
    "500": "Handler error for this request",
    "503": "Overloaded or no worker available (see Retry-After)",
    "504": "Not answered within limits.timeout_s",
}


def build_app(deployment: Deployment) -> FastAPI:
    spec = deployment.spec
    app = FastAPI(title=f"servectl: {spec.name}", version=__version__)
    supervisor = deployment.supervisor

    @app.get("/health", summary="Liveness: the API process is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: every worker finished setup")
    async def ready() -> JSONResponse:
        body: dict[str, Any] = {
            "ready": supervisor.all_ready,
            "workers": len(deployment.slots),
            "workers_ready": supervisor.ready_count,
        }
        if supervisor.problems:
            body["problems"] = [supervisor.problems[i] for i in sorted(supervisor.problems)]
        return JSONResponse(body, status_code=200 if supervisor.all_ready else 503)

    @app.get("/info", summary="What is deployed, and how")
    async def info() -> dict[str, object]:
        return deployment.info()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(deployment.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post(spec.api.path, summary=f"Run {spec.name}", operation_id="predict")
    async def predict(request: Any = Body(...)) -> Any:  # pragma: no cover - served by gateway
        raise RuntimeError("model routes are served by the gateway")

    if spec.api.kind == "v2":
        from servectl.server.v2 import add_v2_routes

        add_v2_routes(app, deployment)
    elif spec.api.kind == "openai":
        started = int(time.time())

        @app.get("/v1/models", summary="OpenAI: the served model", tags=["openai"])
        async def models() -> dict[str, Any]:
            model = {"id": spec.name, "object": "model", "created": started, "owned_by": "servectl"}
            return {"object": "list", "data": [model]}

        paths = (
            ["/v1/chat/completions", "/v1/completions"] if spec.model.task == "text-generation" else ["/v1/embeddings"]
        )
        for path in paths:  # documented here, served by the gateway
            app.add_api_route(path, predict, methods=["POST"], tags=["openai"], summary=f"OpenAI {path}")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        handler = supervisor.handler_info
        operation = schema["paths"][spec.api.path]["post"]
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = _ERROR_SCHEMA
        responses: dict[str, Any] = {"200": {"description": "The handler's output"}}
        operation["responses"] = responses
        for code, text in _ERRORS.items():
            ref = {"$ref": "#/components/schemas/Error"}
            responses[code] = {"description": text, "content": {"application/json": {"schema": ref}}}
        if handler is not None:
            components.update(handler.defs)
            request_schema = handler.request_schema or {}
            content: dict[str, Any] = {"schema": request_schema}
            if handler.example is not None:
                content["example"] = handler.example
            operation["requestBody"] = {"required": True, "content": {"application/json": content}}
            if handler.response_schema:
                responses["200"]["content"] = {"application/json": {"schema": handler.response_schema}}
            app.openapi_schema = schema  # complete: cache it
        if spec.auth.api_keys:
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
