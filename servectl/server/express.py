"""The express lane: a model route's POST whose whole body came with its head is queued
for a worker straight from the HTTP parser's callback and answered from its future's
callback, with no asyncio task.

A task per request (made, scheduled, woken by the future, awaited through the edge and
the endpoint) cost ~4.5 us of the API process's ~36 us per small request. Everything the
task path applies still applies: the edge's checks and observers, the endpoint's limits,
deadline and disconnect watch (`FirstTicks`), the same outcome handling. What the lane
does not take goes the task path unchanged: a body still arriving, a pipelined request,
a rate-limited or cached model, a shared OpenAI route, a framed (V2 binary) body, a
refused check, a compressed body. Any answer but a plain reply (an error, a stream, a client
gone, a reply to compress) is sent by the endpoint's own code in a task made only then.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from servectl.outcome import Failure, Reply
from servectl.server.asgi import Receive, Send, answer_headers
from servectl.server.encoding import answer_coding
from servectl.server.endpoint import ModelEndpoint
from servectl.server.http.cycle import Cycle
from servectl.server.request import Request

if TYPE_CHECKING:
    from servectl.server.edge import RequestContext

log = logging.getLogger("servectl")
_CRASHED = Failure(500, "internal_error", "internal server error")


class ExpressLane:
    """What the HTTP connection (`http.Connection`) hands each request whose body is in (`take`)."""

    def __init__(self, edge: RequestContext) -> None:
        self.endpoints = {path: e for path, e in edge.router.endpoints.items() if isinstance(e, ModelEndpoint)}
        self.checks = edge.checks
        self.observe = edge.observe
        self.tasks: set[asyncio.Task[None]] = set()  # the answers sent by a task, held until done

    def take(self, cycle: Cycle) -> bool:
        """Queue the request and answer it later; False (nothing done) where the task path
        must take it. Called from the HTTP parser's callback: it never raises (the parser
        would answer 400 for servectl's fault)."""
        try:
            chosen = self._chosen(cycle)
        except Exception:
            log.exception("the express lane could not look at a request: the task path takes it")
            return False
        if chosen is None:
            return False
        endpoint, request = chosen
        body = cycle.whole_body()
        if body is None:
            return False
        try:
            pending = endpoint.start(request, body, cast(Receive, cycle.receive))
            pending.future.add_done_callback(lambda _: self._answer(cycle, endpoint, request))
        except Exception:
            self._crashed(cycle, request)
        return True

    def _chosen(self, cycle: Cycle) -> tuple[ModelEndpoint, Request] | None:
        """The request's endpoint and record, if the lane takes it (its body is still unread)."""
        scope = cycle.scope
        endpoint = self.endpoints.get(scope["path"])
        if endpoint is None or scope["method"] != "POST":
            return None
        endpoint.refresh()
        if endpoint.guarded or len(cycle.body) > endpoint.max_body:
            return None
        request = Request(scope, endpoint)
        if b"content-encoding" in request.headers:  # a compressed body: inflated on the task path
            return None
        framing = endpoint.protocol.framing_header
        if framing is not None and framing in request.headers:
            return None
        for check in self.checks:
            if check(scope, request) is not None:
                return None  # its refusal is the task path's to send
        return endpoint, request

    def _answer(self, cycle: Cycle, endpoint: ModelEndpoint, request: Request) -> None:
        """The worker answered (or the deadline, or the client's leaving, did)."""
        pending = request.pending
        assert pending is not None
        try:
            outcome = pending.future.result()
            if (
                type(outcome) is Reply
                and outcome.json_length is None
                and (
                    len(outcome.body) < endpoint.gzip_min or not answer_coding(request.headers.get(b"accept-encoding"))
                )
            ):  # the common answer, here and now (one to compress: the endpoint's code)
                endpoint.first_ticks.settle(pending)
                if cycle.send_whole(200, answer_headers(outcome.body, request.id), outcome.body):
                    request.status = 200
                    self.observe(cycle.scope, request)
                    return
            task = asyncio.get_running_loop().create_task(self._answer_later(cycle, endpoint, request))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        except Exception:
            self._crashed(cycle, request)

    async def _answer_later(self, cycle: Cycle, endpoint: ModelEndpoint, request: Request) -> None:
        """Any other outcome, or a reply the connection cannot take at once: the endpoint's code."""
        pending = request.pending
        assert pending is not None
        scope = cycle.scope
        try:
            outcome = pending.future.result()
            request.status = await endpoint.send_outcome(scope, cast(Send, cycle.send), request, pending, outcome)
        except Exception:
            self._crashed(cycle, request)
            return
        finally:
            endpoint.first_ticks.settle(pending)
        self.observe(scope, request)

    def _crashed(self, cycle: Cycle, request: Request) -> None:
        """A bug of servectl's own: logged, and a 500 for this request only (its connection
        closed instead, when its answer had started)."""
        log.exception("internal error answering request %s", request.id)
        if cycle.response_started:
            cycle.transport.close()
            return
        request.status = 500
        body = request.endpoint.protocol.error_body(_CRASHED, request.id) if request.endpoint else b""
        if not cycle.send_whole(500, answer_headers(body, request.id), body):
            cycle.transport.close()
        try:
            self.observe(cycle.scope, request)
        except Exception:
            log.exception("internal error recording request %s", request.id)
