"""One HTTP request as the edge's pieces see it (`Request`), a check's answer in its place
(`Refusal`), and the two kinds of piece: checks before the route, observers after."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from servectl.outcome import Failure
from servectl.protocols.access import ANONYMOUS
from servectl.server.asgi import Receive, Scope, Send, request_id_from

if TYPE_CHECKING:
    from servectl.protocols import ApiProtocol
    from servectl.runtime.scheduler import Pending
    from servectl.server.auth import KeySet


class RouteEndpoint(Protocol):
    """A model route's endpoint as a request record holds it (`endpoint.ModelEndpoint`, or
    `by_model.ByModel` for an OpenAI route several models share)."""

    model_name: str  # the model answering ("" until a shared route's body names one)
    protocol: ApiProtocol  # whose error shape its answers take

    @property
    def keys(self) -> KeySet | None:
        """The keys its route accepts; None: open."""
        ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        """Answer the request; the status it got."""
        ...


class Request:
    """One HTTP request as the edge pieces see it."""

    __slots__ = ("elapsed", "endpoint", "headers", "id", "keep", "key_name", "model", "pending", "started", "status")

    def __init__(self, scope: Scope, endpoint: RouteEndpoint | None) -> None:
        self.started = time.perf_counter()
        self.headers: dict[bytes, bytes] = dict(scope["headers"])  # ASGI servers lower-case names
        self.id = request_id_from(self.headers.get(b"x-request-id"))
        self.endpoint = endpoint  # the model route it targets, if any
        self.model = endpoint.model_name if endpoint is not None else ""  # the model answering (a label)
        self.status = 500  # until an answer says otherwise
        self.elapsed = 0.0  # seconds to the answer, set once it is sent
        self.pending: Pending | None = None  # its work for a worker, once queued (traces read its times)
        self.key_name = ANONYMOUS  # the name of the API key it came with (rate limits, /stats)
        self.keep: Callable[[bytes], None] | None = None  # a relayed route's: sees the answer (or each chunk)


class Refusal:
    """A check's answer in place of the route's."""

    __slots__ = ("extra", "failure", "protocol")

    def __init__(self, failure: Failure, protocol: ApiProtocol, extra: list[tuple[bytes, bytes]] | None = None):
        self.failure = failure
        self.protocol = protocol  # whose error shape it is sent in
        self.extra = extra


Check = Callable[[Scope, Request], "Refusal | None"]
Observer = Callable[[Scope, Request], None]
