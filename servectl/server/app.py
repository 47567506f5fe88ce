"""The FastAPI app: probes, info, metrics, admin, docs and the OpenAPI document.

Model routes are served by the lean ASGI path (`edge.py`, `endpoint.py`), not by FastAPI;
`openapi.py` adds them to the document with the schemas workers report.
Operation ids are the method names of generated clients.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from servectl import __version__
from servectl.outcome import Failure
from servectl.protocols.predict.errors import failure_body
from servectl.protocols.probes import Health, Readiness, Reloaded, probe_answer, readiness
from servectl.runtime.base import ReloadError
from servectl.server.auth import access_of
from servectl.server.openapi import complete_schema
from servectl.server.router import REQUEST_ID
from servectl.server.served import Served


def build_app(deployment: Served) -> FastAPI:
    spec = deployment.spec
    names = ", ".join(deployment.models)
    title = f"servectl: {names}" if len(deployment.models) < 4 else f"servectl: {len(deployment.models)} models"
    app = FastAPI(title=title, version=__version__)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        """FastAPI's own errors (404, 405) in the error shape of the path's protocol
        (`/v1/...`: OpenAI's, `/v2/...`: V2's, else servectl's), never `{"detail": ...}`."""
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            failure = Failure(404, "unknown_url", f"Invalid URL ({where}): no such route on this server")
        else:
            failure = Failure(exc.status_code, "http_error", f"{exc.detail} ({where})")
        return _error(request, failure, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        """A query or path parameter that does not validate: a 422 in the path's error shape."""
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        fields = ", ".join(".".join(map(str, d["loc"])) for d in detail)
        return _error(request, Failure(422, "validation_error", f"invalid request: {fields}", detail), {})

    def _error(request: Request, failure: Failure, headers: dict[str, str]) -> Response:
        shape = deployment.protocols.shape_for(request.url.path)
        body = shape.error_body(failure, request.scope.get(REQUEST_ID, ""))
        return Response(body, status_code=failure.status, headers=headers, media_type="application/json")

    @app.get(
        "/health",
        summary="Liveness: the process can serve (fails while every worker slot of every model has given up)",
        operation_id="health",
        **probe_answer(Health),
    )
    async def health() -> JSONResponse:
        if deployment.given_up:  # a liveness probe restarts what no longer heals itself
            problems = [p for model in deployment.models.values() for p in model.problems]
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get(
        "/ready",
        summary="Readiness: every worker of every model (or of `model`) finished setup",
        operation_id="ready",
        **probe_answer(Readiness),
    )
    async def ready(
        request: Request,
        model: Annotated[str | None, Query(description="Only this model's readiness.")] = None,
    ) -> Response:
        if model is None:
            body, ok = readiness(list(deployment.models.values()), deployment.several)
        elif model in deployment.models:
            body, ok = readiness([deployment.models[model]], deployment.several)
        else:
            failure = Failure(404, "not_found", f"no model {model!r} here; served: {names}")
            error = failure_body(failure, request.scope.get(REQUEST_ID, ""))
            return Response(error, 404, media_type="application/json")
        if deployment.hub is not None and not deployment.hub.all_serving:  # api_processes: each must answer
            ok = body["ready"] = False
            body["problems"] = [*body.get("problems", []), *deployment.hub.problems]
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/info", summary="What is deployed, and how (the models the key may use)", operation_id="info")
    async def info(request: Request) -> dict[str, Any]:
        answer = deployment.info()
        access = access_of(request.scope)
        if access is not None and access.models is not None:  # a model's own key: its models only
            answer["models"] = [m for m in answer["models"] if access.sees(m["name"])]
        return answer

    @app.get(
        "/stats",
        summary="Usage: requests, tokens, latency, batches, workers and cache per model and overall; "
        "requests and tokens per API key name (a key sees its own, an admin key every key's)",
        operation_id="stats",
    )
    async def stats(request: Request) -> dict[str, Any]:
        return deployment.usage.report(deployment, access_of(request.scope))

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, operation_id="metrics")
    async def metrics(request: Request) -> Response:
        access = access_of(request.scope)
        if access is None or access.admin:
            body, content_type = deployment.metrics.render(request.headers.get("accept", ""))
        else:  # the models the key may use; of the samples by key name (key_name_metrics), its own
            body, content_type = deployment.metrics.render(
                request.headers.get("accept", ""), access.models, access.name
            )
        return Response(body, media_type=content_type)

    @app.post(
        "/admin/models/{name}/reload",
        summary="Re-read a model's spec entry and roll its workers to it, without downtime (admin keys)",
        operation_id="reload",
        tags=["admin"],
        response_model=Reloaded,
        include_in_schema=bool(spec.auth.admin_keys),  # documented while it can be used
    )
    async def reload(name: str, request: Request) -> Response:
        try:
            answer = await deployment.reload(name)
        except ReloadError as exc:
            body = failure_body(exc.failure, request.scope.get(REQUEST_ID, ""))
            return Response(body, status_code=exc.failure.status, media_type="application/json")
        app.openapi_schema = None  # what workers report may have changed
        return JSONResponse(answer)

    for protocol in deployment.protocols.all:
        protocol.add_routes(app, deployment)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        if complete_schema(schema, deployment):
            app.openapi_schema = schema  # complete: cache it
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
