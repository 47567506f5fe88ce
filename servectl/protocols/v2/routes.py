"""Open Inference Protocol (V2) routes: server and model metadata, health, readiness, the
served version's routes, and Triton's inference statistics.

`POST /v2/models/{name}[/versions/1]/infer` for each V2 model is served by the edge
(`servectl.server.endpoint`, like the predict route); the FastAPI routes here answer only
other model names and versions (404).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from servectl import __version__
from servectl.metrics import FastHistogram
from servectl.protocols.access import access_of
from servectl.protocols.probes import probe_answer
from servectl.protocols.v2.version import VERSION
from servectl.runtime.base import ServedModels


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class StatDuration(BaseModel):
    count: int
    ns: int


class InferStats(BaseModel):
    success: StatDuration
    fail: StatDuration
    queue: StatDuration
    compute_input: StatDuration
    compute_infer: StatDuration
    compute_output: StatDuration


class ModelStats(BaseModel):
    name: str
    version: str
    last_inference: int
    inference_count: int
    execution_count: int
    inference_stats: InferStats


class Statistics(BaseModel):
    model_stats: list[ModelStats]


def _not_found(name: str) -> JSONResponse:
    return JSONResponse({"error": f"model {name!r} is not served here"}, status_code=404)


def _no_version(name: str, version: str) -> JSONResponse:
    msg = f"model {name!r} has no version {version!r}: the served version is {VERSION!r}"
    return JSONResponse({"error": msg}, status_code=404)


def _duration(hist: FastHistogram) -> dict[str, int]:
    return {"count": sum(hist.counts), "ns": int(hist.sum * 1e9)}


def statistics(deployment: ServedModels, name: str) -> dict[str, Any]:
    """Triton's statistics of one model from servectl's metrics: answers on its V2 routes
    (success and fail, with their total time), queue wait and predict time per batch.
    `inference_count` counts requests that reached a worker (Triton counts each batch row;
    the API process does not look inside a request), `execution_count` the batches."""
    metrics = deployment.metrics
    paths = {f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/{VERSION}/infer"}
    answers = {"success": [0, 0.0], "fail": [0, 0.0]}
    for (model, route, status), count in metrics.requests.items():
        if model == name and route in paths:
            answers["success" if status < 400 else "fail"][0] += count
    for (model, route), hist in metrics.latency.items():
        if model == name and route in paths:
            answers["success"][1] += hist.sum  # latency is kept per route, not per outcome
    m = metrics.model(name)
    zero = {"count": 0, "ns": 0}
    stats = {
        "success": {"count": answers["success"][0], "ns": int(answers["success"][1] * 1e9)},
        "fail": {"count": answers["fail"][0], "ns": 0},
        "queue": _duration(m.queue_time),
        "compute_input": zero,  # decode happens inside the worker's predict time
        "compute_infer": _duration(m.predict_time),
        "compute_output": zero,
    }
    return {
        "name": name,
        "version": VERSION,
        "last_inference": int(metrics.last_answer.get(name, 0) * 1000),
        "inference_count": int(m.batch_size.sum),
        "execution_count": sum(m.batch_size.counts),
        "inference_stats": stats,
    }


def add_v2_routes(app: FastAPI, deployment: ServedModels) -> None:
    served = {name: m for name, m in deployment.models.items() if m.spec.api.kind == "v2"}

    @app.get("/v2", summary="V2 server metadata", tags=["v2"], operation_id="server_metadata")
    async def server_metadata() -> ServerMetadata:
        return ServerMetadata(name="servectl", version=__version__, extensions=["binary_tensor_data"])

    # the same, with a trailing slash (clients that join `/v2/` and a path): answered, not redirected
    app.get("/v2/", include_in_schema=False)(server_metadata)

    @app.get("/v2/health/live", summary="V2 liveness", tags=["v2"], operation_id="server_live")
    async def live() -> Live:
        return Live(live=True)

    @app.get(
        "/v2/health/ready",
        summary="V2 readiness: every model",
        tags=["v2"],
        operation_id="server_ready",
        **probe_answer(Ready),
    )
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": deployment.ready}, status_code=200 if deployment.ready else 503)

    @app.get(
        "/v2/models/stats",
        summary="Triton's inference statistics of every model",
        tags=["v2"],
        operation_id="statistics",
        response_model=Statistics,
    )
    async def all_statistics(request: Request) -> JSONResponse:  # before /v2/models/{name}: no model is "stats"
        access = access_of(request.scope)  # a model's own key: the models it may use
        seen = [name for name in served if access is None or access.sees(name)]
        return JSONResponse({"model_stats": [statistics(deployment, name) for name in seen]})

    @app.get(
        "/v2/models/{name}",
        summary="V2 model metadata",
        tags=["v2"],
        operation_id="model_metadata",
        response_model=ModelMetadata,
    )
    async def model_metadata(name: str) -> JSONResponse:
        model = served.get(name)
        if model is None:
            return _not_found(name)
        info = model.handler_info
        if info is None or info.metadata is None:
            return JSONResponse({"error": "the model is still loading"}, status_code=503)
        return JSONResponse(info.metadata)

    @app.get(
        "/v2/models/{name}/ready",
        summary="V2 model readiness",
        tags=["v2"],
        operation_id="model_ready",
        **probe_answer(ModelReady),
    )
    async def model_ready(name: str) -> JSONResponse:
        model = served.get(name)
        if model is None:
            return _not_found(name)
        return JSONResponse({"name": name, "ready": model.ready}, status_code=200 if model.ready else 503)

    @app.post("/v2/models/{name}/infer", include_in_schema=False)
    async def infer(name: str) -> JSONResponse:  # a served model's path never reaches here
        return _not_found(name)

    @app.get(
        "/v2/models/{name}/stats",
        summary="Triton's inference statistics of a model",
        tags=["v2"],
        operation_id="model_statistics",
        response_model=Statistics,
    )
    async def model_statistics(name: str) -> JSONResponse:
        if name not in served:
            return _not_found(name)
        return JSONResponse({"model_stats": [statistics(deployment, name)]})

    # Triton clients' aliases of the unversioned routes: the served version, or 400 naming it
    aliases: list[tuple[str, str, Handler, dict[str, Any]]] = [
        ("GET", "", model_metadata, {"response_model": ModelMetadata}),
        ("GET", "/ready", model_ready, probe_answer(ModelReady)),
        ("GET", "/stats", model_statistics, {"response_model": Statistics}),
        ("POST", "/infer", infer, {}),  # (the served version's path never reaches here)
    ]
    for method, suffix, unversioned, options in aliases:
        app.add_api_route(
            f"/v2/models/{{name}}/versions/{{version}}{suffix}",
            _versioned(unversioned, set(served)),
            methods=[method],
            operation_id=f"model_version_{unversioned.__name__}",
            include_in_schema=False,
            **options,
        )


Handler = Callable[[str], Awaitable[JSONResponse]]


def _versioned(unversioned: Handler, served: set[str]) -> Callable[[str, str], Awaitable[JSONResponse]]:
    """A version's alias of an unversioned route: the served version answers as it does."""

    async def alias(name: str, version: str) -> JSONResponse:
        if name in served and version != VERSION:
            return _no_version(name, version)
        return await unversioned(name)

    return alias
