"""An OpenAPI document read once into what every client language needs: its operations, and
with several models, which model each belongs to (a client has one group of calls per model)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from servectl.clientgen.source import ClientGenError

_REF = "#/components/schemas/"
_JSON, _NDJSON, _SSE = "application/json", "application/x-ndjson", "text/event-stream"


@dataclass(frozen=True)
class Stream:
    """How a route streams: SSE or NDJSON, the body flag that asks for it (None: it always
    streams), the sentinel that ends it, and one chunk's schema."""

    format: str
    flag: str | None
    done: str | None
    chunk: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    name: str  # the operationId: a method name in every client
    method: str
    path: str
    params: tuple[str, ...]  # path parameters, in order
    summary: str
    body: dict[str, Any] | None  # the JSON request body's schema; None: no body
    response: dict[str, Any] | None  # the JSON answer's schema; None: the answer is text
    stream: Stream | None
    answers: tuple[int, ...]  # non-2xx statuses that are answers (a probe's 503), not errors
    example: Any
    secured: bool
    models: tuple[str, ...] = ()  # several models: those whose group has it; none: the client's own
    call: str = ""  # its method name in a model's group: the operationId without the model's prefix


def _identifier(name: str) -> str:
    ident = re.sub(r"\W+", "_", name).strip("_") or "call"
    return f"call_{ident}" if ident[0].isdigit() else ident


def _operation(path: str, method: str, op: dict[str, Any]) -> Operation:
    content = op.get("responses", {}).get("200", {}).get("content", {})
    body_content = op.get("requestBody", {}).get("content", {}).get(_JSON)
    extension = op.get("x-servectl-stream")
    stream = None
    if extension:
        fmt = extension.get("format", "ndjson")
        chunk = content.get(_SSE if fmt == "sse" else _NDJSON, {}).get("schema", {})
        stream = Stream(fmt, extension.get("flag"), extension.get("done"), chunk)
    response: dict[str, Any] | None = content[_JSON].get("schema", {}) if _JSON in content else None
    operation_id = op.get("operationId") or f"{method}_{path}"
    own, shared = op.get("x-servectl-model"), op.get("x-servectl-models")
    models = (own,) if isinstance(own, str) else tuple(map(str, shared)) if isinstance(shared, list) else ()
    call = operation_id.removeprefix(re.sub(r"\W", "_", own) + "_") if isinstance(own, str) else operation_id
    return Operation(
        name=_identifier(operation_id),
        method=method.upper(),
        path=path,
        params=tuple(re.findall(r"{(\w+)}", path)),
        summary=str(op.get("summary", "")),
        body=body_content.get("schema", {}) if body_content is not None else None,
        response=response,
        stream=stream,
        answers=tuple(int(s) for s in op.get("x-servectl-answers", []) if int(s) >= 300),
        example=body_content.get("example") if body_content else None,
        secured=bool(op.get("security")),
        models=models,
        call=_identifier(call),
    )


def read_operations(schema: dict[str, Any]) -> list[Operation]:
    """Every GET and POST operation, in document order, with unique names."""
    operations: list[Operation] = []
    for path, item in schema.get("paths", {}).items():
        for method in ("get", "post"):
            if method in item:
                operations.append(_operation(path, method, item[method]))
    names = [o.name for o in operations]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ClientGenError(f"the OpenAPI document has several operations named {', '.join(clashes)}")
    return operations


def ref_name(schema: dict[str, Any]) -> str | None:
    """The component a schema points to, if it is a `$ref`."""
    ref = schema.get("$ref")
    return ref[len(_REF) :] if isinstance(ref, str) and ref.startswith(_REF) else None


# attributes of the clients' base classes (both languages, as snake_case): no group may take them
_RESERVED = frozenset(
    {"base_url", "headers", "timeout", "retries", "backoff_s", "max_delay_s", "http", "close", "request", "stream"}
    | {"send", "retry_in", "fetcher", "timeout_ms", "backoff_ms", "max_delay_ms"}
)


@dataclass(frozen=True)
class Group:
    """One model's calls in a client of several models: `client.text_stats.predict(...)`."""

    model: str  # its name in the spec
    kind: str  # its api.kind
    attr: str  # its attribute in a client (snake_case; TypeScript camelCases it)
    operations: tuple[Operation, ...]  # each called by its `call` name
    prefilled: frozenset[str]  # calls whose body's `model` is this model unless the caller names one


def _body_has_model(schema: dict[str, Any], body: dict[str, Any] | None) -> bool:
    name = ref_name(body or {})
    resolved = schema.get("components", {}).get("schemas", {}).get(name, {}) if name else body or {}
    return "model" in resolved.get("properties", {})


def group_operations(schema: dict[str, Any]) -> tuple[list[Operation], list[Group]]:
    """The client's own operations (probes, metrics, admin: every model's) and one group per model,
    in the document's order of models. A one-model document has no groups: its client is as it
    always was. The OpenAI routes (shared, or one model's) fill in `model` in an OpenAI model's group."""
    operations = read_operations(schema)
    top = [op for op in operations if not op.models]
    listed = schema.get("x-servectl", {}).get("models") or []
    kinds = {str(m.get("name")): str(m.get("kind", "?")) for m in listed if isinstance(m, dict)}
    paths = {str(m.get("name")): m.get("path") for m in listed if isinstance(m, dict)}
    names = list(dict.fromkeys([*kinds, *(m for op in operations for m in op.models)]))
    taken = {op.name for op in top} | _RESERVED
    groups: list[Group] = []
    owners: dict[str, str] = {}
    for model in names:
        ops = tuple(op for op in operations if model in op.models)
        if not ops:
            continue
        attr = _identifier(model)
        attr = f"{attr}_model" if attr in taken else attr
        if attr in owners:
            raise ClientGenError(f"models {owners[attr]!r} and {model!r} would both be the client's {attr!r}")
        owners[attr] = model
        calls = [op.call for op in ops]
        clashes = sorted({c for c in calls if calls.count(c) > 1})
        if clashes:
            raise ClientGenError(f"model {model!r} has several operations named {', '.join(clashes)}")
        kind = kinds.get(model, "?")
        prefilled = frozenset(
            op.call
            for op in ops
            if kind == "openai" and op.path.startswith("/v1/") and op.path != paths.get(model)
            if op.body is not None and _body_has_model(schema, op.body)
        )
        groups.append(Group(model, kind, attr, ops, prefilled))
    return top, groups


def deployment_title(meta: dict[str, Any], groups: list[Group], quote: Callable[[str], str]) -> tuple[str, str]:
    """What a client is of, and that with its model's api.kind (with several, each model's);
    names quoted as the client's language writes strings."""
    if not groups:
        title = f"the servectl deployment {quote(meta.get('name', '?'))}"
        return title, f"{title} (api.kind {meta.get('kind', '?')})"
    title = f"the servectl deployment of {len(groups)} models"
    return title, f"{title}: " + ", ".join(f"{quote(g.model)} ({g.kind})" for g in groups)
