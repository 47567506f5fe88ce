"""OpenAI's model listing and vLLM's `GET /version`, served by FastAPI (the POST routes are
served by the edge). A POST route no served model answers (`/v1/embeddings` on a server of
generation models) tells a client naming a served model that it does not serve that route:
a 400 naming `model`, not a 404 saying the model does not exist."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel

from servectl import __version__
from servectl.protocols.access import access_of
from servectl.runtime.base import ServedModels

_ROUTE_WORDS = {
    "/v1/chat/completions": "chat completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}


class ModelCard(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


class ResponseDeleted(BaseModel):
    id: str
    object: str
    deleted: bool


class Version(BaseModel):
    version: str


def _error(status: int, message: str, param: str | None, code: str) -> Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return Response(orjson.dumps({"error": error}), status_code=status, media_type="application/json")


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
            return _error(
                404, f"The model `{model}` does not exist; served: {', '.join(seen)}", "model", "model_not_found"
            )
        return Response(card.model_dump_json(), media_type="application/json")

    @app.get("/version", summary="Extension (vLLM): the server's version", tags=["openai"], operation_id="version")
    async def version() -> Version:
        return Version(version=__version__)

    from servectl.protocols.openai import PROTOCOL

    routes = {name: [r.path for r in PROTOCOL.model_routes(deployment.models[name].spec)] for name in cards}
    served = {path for paths in routes.values() for path in paths}
    for path, words in _ROUTE_WORDS.items():
        if path not in served:
            app.post(path, include_in_schema=False)(_unserved(path, words, routes))
    if "/v1/responses" in served:
        _stored_routes(app)


def _stored_routes(app: FastAPI) -> None:
    """`GET` and `DELETE /v1/responses/{id}`: a response this process stored (see
    `responses_store`), for a key that may use the model that answered it; else a 404. Not
    in the OpenAPI document: a generated client's example could name no stored id."""
    from servectl.protocols.openai.responses_store import STORE, Stored

    def missing(response_id: str) -> Response:
        msg = f"No response with id '{response_id}' is stored on this server"
        return _error(404, msg, "response_id", "not_found")

    def found(response_id: str, request: Request) -> Stored | None:
        stored = STORE.get(response_id)
        access = access_of(request.scope)
        return stored if stored is not None and (access is None or access.sees(stored.model)) else None

    @app.get("/v1/responses/{response_id}", include_in_schema=False)
    async def retrieve_response(response_id: str, request: Request) -> Response:
        stored = found(response_id, request)
        if stored is None:
            return missing(response_id)
        return Response(stored.body, media_type="application/json")

    @app.delete("/v1/responses/{response_id}", include_in_schema=False)
    async def delete_response(response_id: str, request: Request) -> Response:
        if not found(response_id, request):
            return missing(response_id)
        STORE.delete(response_id)
        deleted = ResponseDeleted(id=response_id, object="response.deleted", deleted=True)
        return Response(deleted.model_dump_json(), media_type="application/json")


def _unserved(path: str, words: str, routes: dict[str, list[str]]) -> Callable[[Request], Awaitable[Response]]:
    """POST on an OpenAI route no model here serves: a served model named is a 400."""

    async def unserved(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            model = body.get("model") if isinstance(body, dict) else None
        except orjson.JSONDecodeError:
            model = None
        access = access_of(request.scope)
        seen = [name for name in routes if access is None or access.sees(name)]
        if isinstance(model, str) and model in seen:
            msg = f"The model `{model}` does not serve {words} ({path}); it serves {', '.join(routes[model])}"
            return _error(400, msg, "model", "invalid_request_error")
        return _error(
            404, f"The model `{model}` does not exist on {path}; served: {', '.join(seen)}", "model", "model_not_found"
        )

    return unserved
