"""API protocols, chosen by `api.kind` from a registry (as uvicorn picks its protocol classes
by name). Each is one package: its routes, adapters over a handler, error shape, OpenAPI
fragments and open paths. Adding a protocol is adding a folder and a line here.

Every deployment serves the `predict` route; `api.kind` adds its protocol's routes.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from servectl.handler import Handler, HandlerInfo
from servectl.protocols.base import ApiProtocol, ModelRoute
from servectl.spec import Spec

__all__ = [
    "ADAPTERS",
    "PROTOCOLS",
    "ApiProtocol",
    "ModelRoute",
    "ProtocolSet",
    "build_adapters",
    "describe",
    "fixed_paths",
    "get",
    "model_routes",
    "of",
    "of_all",
    "open_paths",
    "shape_for",
]

PROTOCOLS = {
    "predict": "servectl.protocols.predict:PROTOCOL",
    "openai": "servectl.protocols.openai:PROTOCOL",
    "v2": "servectl.protocols.v2:PROTOCOL",
}
_loaded: dict[str, ApiProtocol] = {}


def get(kind: str) -> ApiProtocol:
    """The protocol registered as `kind`."""
    protocol = _loaded.get(kind)
    if protocol is None:
        module, _, attr = PROTOCOLS[kind].partition(":")
        protocol = _loaded[kind] = getattr(importlib.import_module(module), attr)
    return protocol


def of(spec: Spec) -> list[ApiProtocol]:
    """The protocols a model is served with: `predict`, and its `api.kind`'s."""
    kinds = dict.fromkeys(("predict", spec.api.kind))
    return [get(kind) for kind in kinds]


def of_all(specs: Sequence[Spec]) -> list[ApiProtocol]:
    """The protocols of several models, each once."""
    kinds = dict.fromkeys(kind for spec in specs for kind in ("predict", spec.api.kind))
    return [get(kind) for kind in kinds]


def model_routes(spec: Spec, served: Collection[str] | None = None) -> list[ModelRoute]:
    """Every POST route of `spec` answered by workers; `served` (the route names workers
    reported) narrows the optional ones."""
    return [route for protocol in of(spec) for route in protocol.model_routes(spec, served)]


def build_adapters(spec: Spec, handler: Handler) -> dict[str, Handler]:
    """The protocol adapters around a built handler, by route name ("v2", "chat",
    "completions", "embeddings"). They run no setup of their own: a worker builds them after
    the handler's setup, `client-gen` without any."""
    adapters: dict[str, Any] = {}
    for protocol in of(spec):
        adapters.update(protocol.adapters(spec, handler))
    return {name: Handler(adapter, f"{name}:{handler.name}") for name, adapter in adapters.items()}


def describe(handler: Handler, adapters: dict[str, Handler]) -> HandlerInfo:
    """What the API process is told: the handler's info with its adapters' by route, and a
    protocol's model metadata (V2's) once the runner is set up."""
    metadata = None
    for adapter in adapters.values():
        report = getattr(adapter.obj, "metadata", None)
        metadata = metadata or (report() if callable(report) else None)
    routes = {name: adapter.info() for name, adapter in adapters.items()}
    return msgspec.structs.replace(handler.info(), routes=routes, metadata=metadata)


class ProtocolAdapters:
    """The protocols' adapters as a worker is handed them (`worker.adapters.Adapters`)."""

    def build(self, spec: Spec, handler: Handler) -> dict[str, Handler]:
        return build_adapters(spec, handler)

    def describe(self, handler: Handler, adapters: dict[str, Handler]) -> HandlerInfo:
        return describe(handler, adapters)


ADAPTERS = ProtocolAdapters()


def open_paths(specs: Sequence[Spec]) -> frozenset[str]:
    """Paths of the models' protocols that are never behind an API key: their server-wide
    probes (a model's own readiness, such as V2's `/v2/models/{name}/ready`, says which
    models a server has: it needs a key that opens that model)."""
    return frozenset().union(*(protocol.open_paths for protocol in of_all(specs)))


def shape_for(path: str, specs: Sequence[Spec]) -> ApiProtocol:
    """Whose error shape an answer on `path` takes: the served protocol whose paths start so
    (`/v1/...`: OpenAI's), else servectl's own."""
    for protocol in of_all(specs):
        prefix = protocol.path_prefix
        if prefix and (path.startswith(prefix) or path == prefix.rstrip("/")):
            return protocol
    return get("predict")


def fixed_paths(specs: Sequence[Spec]) -> frozenset[str]:
    """The protocols' own GET paths and each model's (named as such in metrics)."""
    shared = frozenset().union(*(protocol.fixed_paths for protocol in of_all(specs)))
    return shared.union(*(protocol.model_paths(spec) for spec in specs for protocol in of(spec)))


class ProtocolSet:
    """The protocols of one deployment's models, resolved once (its deployment builds it):
    what the edge, the app and the OpenAPI document ask per request or per route, without
    going back to the registry and the specs each time."""

    def __init__(self, specs: Sequence[Spec]) -> None:
        self.specs = tuple(specs)
        self.all = of_all(specs)
        self._by_model = {spec.name: of(spec) for spec in specs}
        self.open_paths = open_paths(specs)
        self.fixed_paths = fixed_paths(specs)
        self.default = get("predict")  # servectl's own error shape
        self._prefixed = [(p.path_prefix, p.path_prefix.rstrip("/"), p) for p in self.all if p.path_prefix]

    def of(self, spec: Spec) -> list[ApiProtocol]:
        """The protocols a model of the set is served with."""
        found = self._by_model.get(spec.name)
        return found if found is not None else of(spec)

    def shape_for(self, path: str) -> ApiProtocol:
        """Whose error shape an answer on `path` takes (see the module's `shape_for`)."""
        for prefix, bare, protocol in self._prefixed:
            if path.startswith(prefix) or path == bare:
                return protocol
        return self.default
