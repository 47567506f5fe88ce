"""The OpenAPI document: FastAPI's, completed with what workers report about the handler.

Model routes carry the handler's (or protocol adapter's) request, answer and stream-chunk
schemas, an example body, their error shape and auth. Two extensions serve generated
clients: `x-servectl-stream` on a route that streams (`format`, and the body `flag` that asks
for it, if any) and `x-servectl` at the top (version, deployment, whether schemas are in).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from servectl import __version__, protocols
from servectl.handler import HandlerInfo
from servectl.protocols import ModelRoute
from servectl.server.auth import ADMIN_PREFIX, APIKeyAuth
from servectl.spec import Spec

if TYPE_CHECKING:
    from servectl.server.served import Served

_ERRORS = {
    "400": "Malformed JSON, or a body that does not inflate for its Content-Encoding",
    "401": "Missing or wrong API key",
    "413": "Body larger than limits.max_body_mb (decompressed, for a gzip or deflate body)",
    "415": "Body sent with a Content-Type that is not JSON, or a Content-Encoding other than gzip or deflate",
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
    """Only the component schemas the paths reach, sorted by name."""
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
    error = {"$ref": f"#/components/schemas/{protocols.get(route.protocol).error_schema_name}"}
    responses: dict[str, Any] = {"200": {"description": "The model's answer"}}
    for code, text in _ERRORS.items():
        responses[code] = {"description": text, "content": {"application/json": {"schema": error}}}
    if route.protocol == "openai":  # the body's `model` names one that is not served
        responses["404"] = {"description": "No such model", "content": {"application/json": {"schema": error}}}
    if spec.limits.rate.limited or any(k.requests_per_minute or k.tokens_per_minute for k in spec.auth.keys or []):
        text = "The key's rate limit is reached (see Retry-After and the x-ratelimit-* headers)"
        responses["429"] = {"description": text, "content": {"application/json": {"schema": error}}}
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


def complete_schema(schema: dict[str, Any], deployment: Served) -> bool:
    """Complete FastAPI's document with the model routes (served by the edge, not FastAPI),
    described from what each model's workers report, with each protocol's error shape;
    True once every model has reported. With several models, a model's own operations are
    tagged with its name, their ids start with it (`text_stats_predict`) and carry
    `x-servectl-model`; a route several models share (OpenAI's) lists them in `x-servectl-models`."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    specs = [model.spec for model in deployment.models.values()]
    for protocol in protocols.of_all(specs):
        components[protocol.error_schema_name] = protocol.error_schema
    several = deployment.several
    sharing: dict[str, list[str]] = {}
    for model in deployment.models.values():
        for route in protocols.model_routes(model.spec):
            sharing.setdefault(route.path, []).append(model.name)
    complete = True
    for model in deployment.models.values():
        spec, info = model.spec, model.handler_info
        complete &= info is not None
        served = {"predict", *info.routes} if info is not None else None
        for route in protocols.model_routes(spec, served):
            if not route.documented:
                continue
            shared = len(sharing[route.path]) > 1
            if shared and route.path in schema.get("paths", {}):
                continue  # documented from the first model that serves it
            operation: dict[str, Any] = {"summary": route.summary, "operationId": route.operation_id}
            if several and not shared:
                operation["operationId"] = f"{_ident(spec.name)}_{route.operation_id}"
                operation["x-servectl-model"] = spec.name
                operation["tags"] = [spec.name]
            elif shared:
                operation["x-servectl-models"] = sharing[route.path]
            if route.protocol != "predict" and "tags" not in operation:
                operation["tags"] = [route.protocol]
            route_info = info if info is None or route.name == "predict" else info.routes.get(route.name)
            document_route(operation, route, route_info, spec, components)
            schema.setdefault("paths", {})[route.path] = {"post": operation}
    _secure(schema, deployment)
    _errors_everywhere(schema, specs)
    first = specs[0]
    meta: dict[str, Any] = {"version": __version__, "complete": complete}
    meta["models"] = [{"name": s.name, "kind": s.api.kind, "path": s.api.path} for s in specs]
    if not several:
        meta.update(name=first.name, kind=first.api.kind)
    schema["x-servectl"] = meta
    schema["components"]["schemas"] = _used_components(schema)
    return complete


def _errors_everywhere(schema: dict[str, Any], specs: list[Spec]) -> None:
    """Every operation documents the errors it really answers, in its path's error shape:
    401 where a key is needed, 404 for an unknown name in its path (or `?model=`), 422 for a
    parameter that does not validate (FastAPI documents its own `{"detail"}` body there)."""
    v2_names = sorted(s.name for s in specs if s.api.kind == "v2")
    door = protocols.get("predict").error_schema_name
    for path, item in schema.get("paths", {}).items():
        shape = protocols.shape_for(path, specs)
        if path.startswith("/v2/models/{name}"):  # the served names and version, as enums
            for operation in item.values():
                for param in operation.get("parameters", []):
                    if param.get("in") == "path" and param["name"] in ("name", "version"):
                        param["schema"] = {"type": "string", "enum": v2_names if param["name"] == "name" else ["1"]}
        error = {
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{shape.error_schema_name}"}}}
        }
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if "security" in operation:
                responses.setdefault("401", {"description": "Missing or wrong API key", **error})
            if "{" in path or path == "/ready":
                responses.setdefault("404", {"description": "No such model (or version)", **error})
            if "422" in responses or operation.get("parameters"):
                responses["422"] = {"description": "A parameter failed validation", **error}
            # answered by the HTTP layer before any route is known: servectl's own shape
            responses.setdefault("431", {"description": "Request line and headers larger than server.max_header_kb"})
            responses["431"]["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{door}"}}}


def _secure(schema: dict[str, Any], deployment: Served) -> None:
    """Mark the operations that need a key: a model route when its model takes keys (shared
    or its own), any other path but the probes while any key exists."""
    specs = [m.spec for m in deployment.models.values()]
    auth = APIKeyAuth(deployment.spec.auth, protocols.open_paths(deployment.spec.models), specs)
    if not auth.enabled:
        return
    keyed: set[str] = set()
    unkeyed: set[str] = set()
    for spec in specs:
        paths = {route.path for route in protocols.model_routes(spec)}
        (keyed if auth.for_model(spec.own_api_keys) is not None else unkeyed).update(paths)
    schema["components"]["securitySchemes"] = SECURITY_SCHEMES
    for path, item in schema["paths"].items():
        if path in unkeyed - keyed:  # a model open to anyone (a route several share: keyed if one is)
            continue
        if _probe(path, specs, auth.open_paths):
            continue
        for operation in item.values():
            if auth.required(path) or path in keyed or path.startswith(ADMIN_PREFIX):
                operation["security"] = [{"bearer": []}, {"apiKey": []}]


def _probe(path: str, specs: list[Spec], open_paths: frozenset[str]) -> bool:
    """A path template whose every served model's path is a probe (V2's `/v2/models/{name}/ready`)."""
    if "{name}" not in path:
        return False
    names = [s.name for s in specs if not path.startswith("/v2/") or s.api.kind == "v2"]
    expanded = {path.replace("{name}", name).replace("{version}", "1") for name in names}
    return bool(expanded) and expanded <= open_paths


def _ident(name: str) -> str:
    """A model name as an identifier part: `text-stats` -> `text_stats`."""
    return re.sub(r"\W", "_", name)
