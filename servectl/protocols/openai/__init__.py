"""`api.kind: openai`: `/v1/chat/completions`, `/v1/completions`, `/v1/responses`,
`/v1/embeddings` and `/v1/models`, over the built-in transformers runners or a handler's `complete`/`embed`
hooks (`servectl.sdk.OpenAIHandler`, `EmbedHandler`), with OpenAI's error shape."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from servectl.outcome import Failure
from servectl.protocols.base import ApiProtocol, ModelRoute, RouteRelay
from servectl.spec import Spec

if TYPE_CHECKING:
    from fastapi import FastAPI

    from servectl.handler import Handler
    from servectl.runtime.base import ServedModels

_ROUTES = {
    "chat": ("/v1/chat/completions", "chat_completions", "OpenAI chat completion"),
    "completions": ("/v1/completions", "completions", "OpenAI text completion"),
    "responses": ("/v1/responses", "create_response", "OpenAI Responses API: create a response"),
    "embeddings": ("/v1/embeddings", "embeddings", "OpenAI embeddings"),
}
_BY_TASK = {"text-generation": ("chat", "completions", "responses"), "feature-extraction": ("embeddings",)}
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
    503: "server_error",
    504: "timeout",
}
_CODES = {  # servectl's error kinds that OpenAI names otherwise
    "not_found": "model_not_found",
    "unauthorized": "invalid_api_key",
    "rate_limited": "rate_limit_exceeded",
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "required": ["message", "type"],
        }
    },
    "required": ["error"],
}


class OpenAIProtocol(ApiProtocol):
    kind = "openai"
    error_schema_name = "OpenAIError"
    error_schema: ClassVar[dict[str, Any]] = SCHEMA
    fixed_paths = frozenset({"/v1/models"})
    sse_only = True
    path_prefix = "/v1/"

    def model_routes(self, spec: Spec, served: Collection[str] | None = None) -> list[ModelRoute]:
        """A custom handler may serve any of the three routes; `served` narrows them to those
        its workers reported."""
        names = _BY_TASK.get(spec.model.task or "", tuple(_ROUTES))
        if served is not None:
            names = tuple(n for n in names if n in served)
        routes = []
        for name in names:
            path, operation, summary = _ROUTES[name]
            flag = None if name == "embeddings" else "stream"
            routes.append(ModelRoute(name, path, operation, summary, self.kind, flag))
        return routes

    def adapters(self, spec: Spec, handler: Handler) -> dict[str, Any]:
        from servectl.protocols.openai import lm
        from servectl.protocols.openai.adapters import ChatCompletions, Completions
        from servectl.protocols.openai.embeddings import Embeddings
        from servectl.protocols.openai.responses import Responses

        model: lm.LanguageModel
        if handler.runner is None:  # the custom contract: complete / embed hooks
            model = lm.HandlerLM(handler.obj, spec.model.max_new_tokens, spec.batching.max_batch_size)
            generates, embeds = model.generates, model.embeds
        else:
            model = lm.TransformersLM(handler.runner)
            generates = spec.model.task == "text-generation"
            embeds = not generates
        adapters: dict[str, Any] = {}
        if generates:
            adapters["chat"] = ChatCompletions(model, spec.name, spec.model.tool_parser)
            adapters["responses"] = Responses(ChatCompletions(model, spec.name, spec.model.tool_parser))
            adapters["completions"] = Completions(model, spec.name)
        if embeds:
            adapters["embeddings"] = Embeddings(model, spec.name)
        return adapters

    def relay(self, route: ModelRoute, model: str) -> RouteRelay | None:
        """`/v1/responses` keeps responses and continues from them in the API process."""
        if route.name != "responses":
            return None
        from servectl.protocols.openai.responses_store import STORE, ResponsesRelay

        return ResponsesRelay(STORE, model)

    def add_routes(self, app: FastAPI, deployment: ServedModels) -> None:
        from servectl.protocols.openai.routes import add_openai_routes

        add_openai_routes(app, deployment)

    def error_body(self, failure: Failure, request_id: str) -> bytes:
        """`{"error": {"message", "type", "param", "code"}}`: `param` names the first failing
        field, `code` is OpenAI's name for the error (`model_not_found`, `invalid_api_key`,
        `context_length_exceeded`...) or servectl's kind."""
        detail = failure.detail
        first = detail[0] if isinstance(detail, list) and detail and isinstance(detail[0], dict) else {}
        param = ".".join(str(p) for p in first.get("loc", [])) or None
        message = failure.message
        if failure.kind == "validation_error" and first.get("type") != "invalid_input":
            message = "; ".join(_problem(d) for d in detail if isinstance(d, dict))
        elif failure.kind == "validation_error":
            message = str(first.get("msg", message))
        default = "server_error" if failure.kind == "handler_error" else "invalid_request_error"
        error = {
            "message": message,
            "type": _TYPES.get(failure.status, default),
            "param": param,
            "code": _CODES.get(failure.kind, failure.kind),
            "request_id": request_id,
        }
        return orjson.dumps({"error": error})


def _problem(detail: dict[str, Any]) -> str:
    """One pydantic error as a sentence naming the parameter."""
    where = ".".join(str(p) for p in detail.get("loc", [])) or "body"
    what = str(detail.get("msg", "invalid")).removeprefix("Value error, ")
    return f"Invalid value for `{where}`: {what}"


PROTOCOL = OpenAIProtocol()
