"""Probe answers: a probe's 503 is an answer with the same body as its 200 (not ready yet),
declared so in OpenAPI so that generated clients return it rather than raise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from servectl.runtime.base import ModelRuntime


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


class ModelReadiness(BaseModel):
    name: str
    ready: bool
    workers: int
    workers_ready: int


class Readiness(BaseModel):
    ready: bool
    workers: int
    workers_ready: int
    models: list[ModelReadiness] | None = None  # with several models
    problems: list[str] | None = None


class Reloaded(BaseModel):
    model: str
    reloaded: bool
    seconds: float
    workers: int


def readiness(models: Sequence[ModelRuntime], several: bool) -> tuple[dict[str, Any], bool]:
    """`/ready`'s body for these models (each listed when the server has `several`), and
    whether all are ready."""
    each = [{"name": m.name, "ready": m.ready, "workers": len(m.slots), "workers_ready": m.ready_count} for m in models]
    ok = all(m["ready"] for m in each)
    body: dict[str, Any] = {
        "ready": ok,
        "workers": sum(m["workers"] for m in each),
        "workers_ready": sum(m["workers_ready"] for m in each),
    }
    if several:
        body["models"] = each
    problems = [p if len(models) == 1 else f"{m.name}: {p}" for m in models for p in m.problems]
    if problems:
        body["problems"] = problems
    return body, ok
