"""An OpenAPI document read once into what every client language needs: its operations."""

from __future__ import annotations

import re
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
    return Operation(
        name=_identifier(op.get("operationId") or f"{method}_{path}"),
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
