"""Probe answers: a probe's 503 is an answer with the same body as its 200 (not ready yet),
declared so in OpenAPI so that generated clients return it rather than raise."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def probe_answer(model: type[BaseModel]) -> dict[str, Any]:
    """FastAPI route options for a probe answering `model` with 200 or 503."""
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
