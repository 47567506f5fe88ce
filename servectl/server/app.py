"""The FastAPI app: probes, info, metrics, docs and the OpenAPI document.

Model routes are served by the lean ASGI path (`edge.py`, `endpoint.py`), not by FastAPI;
`openapi.py` adds them to the document with the schemas workers report.
Operation ids are the method names of generated clients.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from servectl import __version__, protocols
from servectl.deployment import Deployment
from servectl.server.openapi import complete_schema
from servectl.server.probes import Health, Readiness, probe_answer


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

    for protocol in protocols.of(spec):
        protocol.add_routes(app, deployment)

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
