"""What a worker needs of the API protocols, handed to it from above (it imports none).

A protocol (OpenAI, V2) wraps the user's handler in adapters that parse its requests and
shape its answers, in the worker, batched. The worker side sits below the protocols, so
the process that launches workers passes an `Adapters` down (`protocols.ADAPTERS`); it is
pickled by reference into each spawned worker.
"""

from __future__ import annotations

from typing import Protocol

from servectl.handler import Handler, HandlerInfo
from servectl.spec import Spec


class Adapters(Protocol):
    def build(self, spec: Spec, handler: Handler) -> dict[str, Handler]:
        """The adapters around a built handler, by route name ("v2", "chat", ...)."""

    def describe(self, handler: Handler, adapters: dict[str, Handler]) -> HandlerInfo:
        """What the API process is told of the handler and its adapters."""


class NoAdapters:
    """The predict route only: for a worker whose deployment serves no other protocol."""

    def build(self, spec: Spec, handler: Handler) -> dict[str, Handler]:
        return {}

    def describe(self, handler: Handler, adapters: dict[str, Handler]) -> HandlerInfo:
        return handler.info()
