"""API protocols: what each `api.kind` serves on top of a handler."""

from __future__ import annotations

from typing import Any

import msgspec

from servectl.handler import Handler, HandlerInfo
from servectl.spec import Spec


def build_adapters(spec: Spec, handler: Handler) -> dict[str, Handler]:
    """The protocol adapters of `api.kind` around a built handler, by route name ("v2",
    "chat", "completions", "embeddings"). They run no setup of their own: a worker builds
    them after the handler's setup, `client-gen` without any."""
    inner = getattr(handler.obj, "_runner", handler.obj)  # a built-in runner, under any user pre/post hooks
    adapters: dict[str, Any] = {}
    if spec.api.kind == "v2":
        from servectl.protocols.v2.adapter import V2Adapter  # numpy: only tensor deployments need it

        adapters["v2"] = V2Adapter(inner, spec.name)
    elif spec.api.kind == "openai":
        from servectl.protocols.openai import adapters as openai
        from servectl.protocols.openai import lm

        if spec.model.backend == "python":  # the custom contract: complete / embed hooks
            model: Any = lm.HandlerLM(handler.obj, spec.model.max_new_tokens)
            generates, embeds = hasattr(handler.obj, "complete"), hasattr(handler.obj, "embed")
        else:
            model = lm.TransformersLM(inner)
            generates = spec.model.task == "text-generation"
            embeds = not generates
        if generates:
            adapters["chat"] = openai.ChatCompletions(model, spec.name)
            adapters["completions"] = openai.Completions(model, spec.name)
        if embeds:
            adapters["embeddings"] = openai.Embeddings(model, spec.name)
    return {name: Handler(adapter, f"{name}:{handler.name}") for name, adapter in adapters.items()}


def describe(handler: Handler, adapters: dict[str, Handler]) -> HandlerInfo:
    """What the API process is told: the handler's info with its adapters' by route, and
    the V2 model metadata once the runner is set up."""
    v2 = adapters.get("v2")
    metadata = v2.obj.metadata() if v2 is not None and v2.obj.runner.inputs else None
    routes = {name: adapter.info() for name, adapter in adapters.items()}
    return msgspec.structs.replace(handler.info(), routes=routes, metadata=metadata)
