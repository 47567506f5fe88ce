"""What an API protocol is: a package that owns its routes, its adapters over a handler, its
error shape and its OpenAPI fragments. `servectl.protocols` picks one by `api.kind`."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

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


@dataclass(slots=True)
class Relayed:
    """A request as the workers get it, and what to call with its answer (a whole reply's
    body, or each streamed chunk): None when nothing is kept of it."""

    body: bytes
    keep: Callable[[bytes], None] | None = None


class RouteRelay(Protocol):
    """The API process's part in a route whose requests depend on earlier ones (OpenAI's
    `/v1/responses`: `previous_response_id`): it rewrites a body before it is queued (or
    refuses it) and keeps what the answer says. Every other route has none."""

    def prepare(self, body: bytes) -> Relayed | Failure: ...


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

    def relay(self, route: ModelRoute, model: str) -> RouteRelay | None:
        """The API-side relay of one model's route, if it has one (see `RouteRelay`)."""
        return None

    def add_routes(self, app: FastAPI, deployment: ServedModels) -> None:
        """Its routes served by FastAPI (metadata, listings: nothing on the hot path)."""

    def error_body(self, failure: Failure, request_id: str) -> bytes:
        """An error answer as JSON bytes, in the shape its clients expect."""
        raise NotImplementedError
