"""Open Inference Protocol (V2) routes: server and model metadata, health, readiness.

`POST /v2/models/{name}/infer` for each V2 model is served by the edge (`servectl.server.endpoint`)
(like the predict route); the FastAPI route here answers only other model names (404).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from servectl import __version__
from servectl.deployment import Deployment
from servectl.server.probes import probe_answer


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


def _not_found(name: str) -> JSONResponse:
    return JSONResponse({"error": f"model {name!r} is not served here"}, status_code=404)


def add_v2_routes(app: FastAPI, deployment: Deployment) -> None:
    served = {name: m for name, m in deployment.models.items() if m.spec.api.kind == "v2"}

    @app.get("/v2", summary="V2 server metadata", tags=["v2"], operation_id="server_metadata")
    async def server_metadata() -> ServerMetadata:
        return ServerMetadata(name="servectl", version=__version__, extensions=[])

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
