"""OpenAI's model listing, served by FastAPI (the POST routes are served by the edge)."""

from __future__ import annotations

import time

import orjson
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel

from servectl.protocols.access import access_of
from servectl.runtime.base import ServedModels


class ModelCard(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


def add_openai_routes(app: FastAPI, deployment: ServedModels) -> None:
    started = int(time.time())
    cards = {
        name: ModelCard(id=name, object="model", created=started, owned_by="servectl")
        for name, model in deployment.models.items()
        if model.spec.api.kind == "openai"
    }

    @app.get("/v1/models", summary="OpenAI: the served models", tags=["openai"], operation_id="models")
    async def models(request: Request) -> ModelList:
        access = access_of(request.scope)  # a model's own key: the models it may use
        return ModelList(object="list", data=[c for name, c in cards.items() if access is None or access.sees(name)])

    @app.get(
        "/v1/models/{model}",
        summary="OpenAI: one served model",
        tags=["openai"],
        operation_id="retrieve_model",
        response_model=ModelCard,
        responses={404: {"description": "No such model"}},
    )
    async def retrieve(model: str, request: Request) -> Response:
        access = access_of(request.scope)
        seen = [name for name in cards if access is None or access.sees(name)]
        card = cards.get(model) if model in seen else None
        if card is None:
            error = {
                "message": f"The model `{model}` does not exist; served: {', '.join(seen)}",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
            return Response(orjson.dumps({"error": error}), status_code=404, media_type="application/json")
        return Response(card.model_dump_json(), media_type="application/json")
