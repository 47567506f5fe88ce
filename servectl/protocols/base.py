"""What an API protocol is: a package that owns its routes, its adapters over a handler, its
error shape and its OpenAPI fragments. `servectl.protocols` picks one by `api.kind`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from fastapi import FastAPI

    from servectl.handler import Handler
    from servectl.outcome import Failure
    from servectl.runtime.base import ServedModels
    from servectl.spec import Spec


@dataclass(frozen=True)
class ModelRoute:
    """One POST route answered by workers."""

    name: str  # the route key workers dispatch on
    path: str
    operation_id: str  # OpenAPI's, and so the generated client's method name
    summary: str
    protocol: str = "predict"  # the protocol that owns it: its error shape, its OpenAPI tag
    stream_flag: str | None = None  # a body field that asks for a stream (OpenAI's `stream`)
    documented: bool = True  # in the OpenAPI document (and so generated clients); False: an alias


class ApiProtocol:
    """The base every protocol package subclasses; the defaults serve nothing extra."""

    kind: ClassVar[str]
    error_schema_name: ClassVar[str]  # the OpenAPI component of its error body
    error_schema: ClassVar[dict[str, Any]]
    open_paths: ClassVar[frozenset[str]] = frozenset()  # probes: never behind an API key
    fixed_paths: ClassVar[frozenset[str]] = frozenset()  # its GET paths, labelled as such in metrics
    sse_only: ClassVar[bool] = False  # streams always as SSE ending with `data: [DONE]` (OpenAI)
    path_prefix: ClassVar[str | None] = None  # its paths' prefix: errors there (401, 404, 405) take its shape
    # a request header saying the body is framed: that many bytes of JSON, then binary (V2's)
    framing_header: ClassVar[bytes | None] = None

    def model_routes(self, spec: Spec, served: Collection[str] | None = None) -> list[ModelRoute]:
        """The POST routes it adds; `served` (route names workers reported) narrows them."""
        return []

    def model_paths(self, spec: Spec) -> frozenset[str]:
        """One model's own GET paths (metadata, readiness), labelled as such in metrics."""
        return frozenset()

    def adapters(self, spec: Spec, handler: Handler) -> dict[str, Any]:
        """Objects with handler hooks that serve its routes over the built handler, by route name."""
        return {}

    def add_routes(self, app: FastAPI, deployment: ServedModels) -> None:
        """Its routes served by FastAPI (metadata, listings: nothing on the hot path)."""

    def error_body(self, failure: Failure, request_id: str) -> bytes:
        """An error answer as JSON bytes, in the shape its clients expect."""
        raise NotImplementedError
