"""OpenAI's model listing, served by FastAPI (the POST routes are served by the edge)."""

from __future__ import annotations

import time

from fastapi import FastAPI
from pydantic import BaseModel

from servectl.deployment import Deployment


class ModelCard(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


def add_openai_routes(app: FastAPI, deployment: Deployment) -> None:
    name = deployment.spec.name
    started = int(time.time())

    @app.get("/v1/models", summary="OpenAI: the served model", tags=["openai"], operation_id="models")
    async def models() -> ModelList:
        return ModelList(object="list", data=[ModelCard(id=name, object="model", created=started, owned_by="servectl")])
