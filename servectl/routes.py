"""The model routes a deployment serves, named once for the gateway, OpenAPI and workers."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from servectl.spec import Spec

_OPENAI = {
    "chat": ("/v1/chat/completions", "chat_completions", "OpenAI chat completion"),
    "completions": ("/v1/completions", "completions", "OpenAI text completion"),
    "embeddings": ("/v1/embeddings", "embeddings", "OpenAI embeddings"),
}
_OPENAI_BY_TASK = {"text-generation": ("chat", "completions"), "feature-extraction": ("embeddings",)}


@dataclass(frozen=True)
class ModelRoute:
    """One POST route answered by workers."""

    name: str  # the route key workers dispatch on
    path: str
    operation_id: str  # OpenAPI's, and so the generated client's method name
    summary: str
    errors: str = "servectl"  # the error shape its clients expect: servectl's, "v2" or "openai"
    stream_flag: str | None = None  # a body field that asks for a stream (OpenAI's `stream`)


def model_routes(spec: Spec, served: Collection[str] | None = None) -> list[ModelRoute]:
    """Every model route of `spec`. A custom handler behind `api.kind: openai` may serve any
    of the three OpenAI routes; `served` (the route names its workers reported) narrows them."""
    routes = [ModelRoute("predict", spec.api.path, "predict", f"Run {spec.name}")]
    if spec.api.kind == "v2":
        routes.append(ModelRoute("v2", f"/v2/models/{spec.name}/infer", "infer", f"V2 inference on {spec.name}", "v2"))
    elif spec.api.kind == "openai":
        names = _OPENAI_BY_TASK.get(spec.model.task or "", tuple(_OPENAI))
        if served is not None:
            names = tuple(n for n in names if n in served)
        for name in names:
            path, operation, summary = _OPENAI[name]
            flag = None if name == "embeddings" else "stream"
            routes.append(ModelRoute(name, path, operation, summary, "openai", flag))
    return routes
