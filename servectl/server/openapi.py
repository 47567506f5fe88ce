"""The OpenAPI document: FastAPI's, completed with what workers report about the handler.

Model routes carry the handler's (or protocol adapter's) request, answer and stream-chunk
schemas, an example body, their error shape and auth. Two extensions serve generated
clients: `x-servectl-stream` on a route that streams (`format`, and the body `flag` that asks
for it, if any) and `x-servectl` at the top (version, deployment, whether schemas are in).
"""

from __future__ import annotations

from typing import Any

from servectl import __version__
from servectl.handler import HandlerInfo
from servectl.routes import ModelRoute, model_routes
from servectl.server.auth import APIKeyAuth
from servectl.spec import Spec

_ERROR_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                    "request_id": {"type": "string"},
                    "detail": {},
                },
                "required": ["type", "message", "request_id"],
            }
        },
        "required": ["error"],
    },
    "V2Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
    "OpenAIError": {
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
    },
}
_ERROR_NAMES = {"servectl": "Error", "v2": "V2Error", "openai": "OpenAIError"}
_ERRORS = {
    "400": "Malformed JSON",
    "401": "Missing or wrong API key",
    "413": "Body larger than limits.max_body_mb",
    "422": "Request failed validation",
    "500": "Handler error for this request",
    "503": "Overloaded or no worker available (see Retry-After)",
    "504": "Not answered within limits.timeout_s",
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _named(schema: dict[str, Any] | None, components: dict[str, Any]) -> dict[str, Any]:
    """A handler's model schema as a `$ref` to a component named by its title (clients then
    get a named type); schemas without a title stay inline."""
    title = (schema or {}).get("title")
    if not schema or not isinstance(title, str) or "properties" not in schema:
        return schema or {}
    name, n = title, 1
    while name in components and components[name] != schema:
        n += 1
        name = f"{title}{n}"
    components[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _referenced(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _referenced(value, found)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, found)


def _used_components(schema: dict[str, Any]) -> dict[str, Any]:
    """Only the component schemas the paths reach (FastAPI's validation-error models go when
    the placeholder routes they came from were rewritten), sorted by name."""
    components: dict[str, Any] = schema["components"]["schemas"]
    used: set[str] = set()
    _referenced(schema["paths"], used)
    todo = set(used)
    while todo:
        found: set[str] = set()
        _referenced(components.get(todo.pop(), {}), found)
        todo |= found - used
        used |= found
    return {name: components[name] for name in sorted(used) if name in components}


def _answer(
    route: ModelRoute, info: HandlerInfo, spec: Spec, components: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The 200 answer's content by media type, and the stream extension when it streams."""
    response = {"schema": _named(info.response_schema, components)}
    chunk = {"schema": _named(info.chunk_schema, components)}
    if route.stream_flag:  # OpenAI: a stream when the body asks for one
        content = {"application/json": response, "text/event-stream": chunk}
        return content, {"format": "sse", "flag": route.stream_flag, "done": "[DONE]"}
    if info.streams and spec.api.stream:
        return {"application/x-ndjson": chunk, "text/event-stream": chunk}, {"format": spec.api.stream_format}
    if info.streams:  # a generator handler on a route that does not stream: one list of its chunks
        return {"application/json": {"schema": {"type": "array", "items": chunk["schema"]}}}, None
    return {"application/json": response}, None


def document_route(
    operation: dict[str, Any], route: ModelRoute, info: HandlerInfo | None, spec: Spec, components: dict[str, Any]
) -> None:
    """Fill in one model route's operation; the request body stays generic until `info` is known."""
    error = {"$ref": f"#/components/schemas/{_ERROR_NAMES[route.errors]}"}
    responses: dict[str, Any] = {"200": {"description": "The model's answer"}}
    for code, text in _ERRORS.items():
        responses[code] = {"description": text, "content": {"application/json": {"schema": error}}}
    operation["responses"] = responses
    if info is None:
        return
    components.update(info.defs)
    body: dict[str, Any] = {"schema": _named(info.request_schema, components)}
    if info.example is not None:
        body["example"] = info.example
    operation["requestBody"] = {"required": True, "content": {"application/json": body}}
    responses["200"]["content"], stream = _answer(route, info, spec, components)
    if stream is not None:
        operation["x-servectl-stream"] = stream


def complete_schema(schema: dict[str, Any], spec: Spec, info: HandlerInfo | None) -> dict[str, Any]:
    """FastAPI's document with the model routes described from the handler's `info`."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(_ERROR_SCHEMAS)
    served = model_routes(spec, None if info is None else {"predict", *info.routes})
    for route in model_routes(spec):
        if route not in served:  # an OpenAI route the custom handler does not implement
            del schema["paths"][route.path]
            continue
        route_info = info if info is None or route.name == "predict" else info.routes.get(route.name)
        document_route(schema["paths"][route.path]["post"], route, route_info, spec, components)
    auth = APIKeyAuth(spec.auth)
    if auth.enabled:
        schema["components"]["securitySchemes"] = SECURITY_SCHEMES
        for path, item in schema["paths"].items():
            for operation in item.values():
                if auth.required(path):
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
    schema["x-servectl"] = {"version": __version__, "name": spec.name, "kind": spec.api.kind, "complete": bool(info)}
    schema["components"]["schemas"] = _used_components(schema)
    return schema
