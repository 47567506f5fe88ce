"""The FastAPI app: probes, info, metrics, docs and the OpenAPI document.

Model routes are served by the lean ASGI path in `gateway.py`; they are declared here too
so that `/docs` and `/openapi.json` describe them with the schemas workers report.
Operation ids are the method names of generated clients.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

from fastapi import Body, FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from servectl import __version__
from servectl.deployment import Deployment
from servectl.routes import model_routes
from servectl.server.openapi import complete_schema


def probe_answer(model: type[BaseModel]) -> dict[str, Any]:
    """Route options for a probe whose 503 is an answer with the same body as its 200 (not
    ready yet): generated clients return it rather than raise."""
    return {
        "response_model": model,
        "responses": {503: {"model": model, "description": "Not ready yet"}},
        "openapi_extra": {"x-servectl-answers": [200, 503]},
    }


class Health(BaseModel):
    status: str
    problems: list[str] | None = None


class Readiness(BaseModel):
    ready: bool
    workers: int
    workers_ready: int
    problems: list[str] | None = None


class ModelCard(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


async def _served_by_gateway(body: Any = Body(...)) -> Any:  # pragma: no cover - never reached
    raise RuntimeError("model routes are served by the gateway")


def build_app(deployment: Deployment) -> FastAPI:
    spec = deployment.spec
    app = FastAPI(title=f"servectl: {spec.name}", version=__version__)
    supervisor = deployment.supervisor

    @app.get(
        "/health",
        summary="Liveness: the process can serve (fails while every worker slot has given up)",
        operation_id="health",
        **probe_answer(Health),
    )
    async def health() -> JSONResponse:
        if supervisor.all_given_up:  # a liveness probe restarts what no longer heals itself
            problems = [supervisor.problems[i] for i in sorted(supervisor.problems)]
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get(
        "/ready", summary="Readiness: every worker finished setup", operation_id="ready", **probe_answer(Readiness)
    )
    async def ready() -> JSONResponse:
        body: dict[str, Any] = {
            "ready": supervisor.all_ready,
            "workers": len(deployment.slots),
            "workers_ready": supervisor.ready_count,
        }
        if supervisor.problems:
            body["problems"] = [supervisor.problems[i] for i in sorted(supervisor.problems)]
        return JSONResponse(body, status_code=200 if supervisor.all_ready else 503)

    @app.get("/info", summary="What is deployed, and how", operation_id="info")
    async def info() -> dict[str, Any]:
        return deployment.info()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, operation_id="metrics")
    async def metrics() -> Response:
        return Response(deployment.metrics.render(), media_type="text/plain; version=0.0.4")

    if spec.api.kind == "v2":
        from servectl.protocols.v2.routes import add_v2_routes

        add_v2_routes(app, deployment)
    elif spec.api.kind == "openai":
        started = int(time.time())

        @app.get("/v1/models", summary="OpenAI: the served model", tags=["openai"], operation_id="models")
        async def models() -> ModelList:
            return ModelList(
                object="list", data=[ModelCard(id=spec.name, object="model", created=started, owned_by="servectl")]
            )

    for route in model_routes(spec):  # documented here, served by the gateway
        tags: list[str | Enum] | None = None if route.errors == "servectl" else [route.errors]
        app.add_api_route(
            route.path,
            _served_by_gateway,
            methods=["POST"],
            operation_id=route.operation_id,
            summary=route.summary,
            tags=tags,
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        info = supervisor.handler_info
        complete_schema(schema, spec, info)
        if info is not None:
            app.openapi_schema = schema  # complete: cache it
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
