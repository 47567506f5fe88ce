"""One API process's HTTP server: uvicorn, through its public `Config`, running servectl's
app, edge and connection layer, with servectl's signal policy. The first API process and
the others (`api_process`) build theirs here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

from servectl.processes.deployment import Deployment
from servectl.runtime.scheduler import CUT_AFTER_S
from servectl.server.app import build_app
from servectl.server.edge import RequestContext, build_edge
from servectl.server.express import ExpressLane
from servectl.server.http import connection_class
from servectl.server.http.limits import ConnectionLimits

log = logging.getLogger("servectl")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACEFUL_MARGIN_S = 0.25  # past the drain and a stream's cut, for the last answers' connections to close


class ApiServer(uvicorn.Server):
    """uvicorn with servectl's signal policy: the first SIGTERM or SIGINT drains (in-flight
    work finishes within limits.drain_s, then what is left gets a 503), a second one exits
    now; SIGHUP reloads every model from the spec files without downtime. Workers ignore
    these signals: only this process decides when they stop."""

    def __init__(self, config: uvicorn.Config, deployment: Deployment, edge: RequestContext) -> None:
        super().__init__(config)
        self.deployment = deployment
        self.edge = edge
        self.signals = deployment.owner is None  # the other API processes drain when the first says so
        self._reloads: set[asyncio.Task[list[dict[str, Any]]]] = set()  # held until done

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self.signals:
            yield
            return
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload_signal)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if self.should_exit:
            log.warning("second %s: exiting now", name)
            self.deployment.kill_all()
            if self.edge.access_log is not None:
                self.edge.access_log.flush()  # the lines of requests answered so far
            os._exit(1)
        log.info("%s: draining for up to %gs, then stopping", name, self.deployment.drain_s)
        self.drain()

    def drain(self) -> None:
        """Answer what is open (within limits.drain_s), then stop."""
        self.should_exit = True
        with contextlib.suppress(RuntimeError):  # no loop yet: nothing is in flight
            asyncio.get_running_loop().call_soon_threadsafe(self.deployment.begin_drain)

    def _on_reload_signal(self, sig: int, frame: FrameType | None) -> None:
        log.info("SIGHUP: reloading every model from the spec files")
        with contextlib.suppress(RuntimeError):  # no loop yet: nothing to reload
            asyncio.get_running_loop().call_soon_threadsafe(self._reload_all)

    def _reload_all(self) -> None:
        task = asyncio.get_running_loop().create_task(self.deployment.reload_all())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)


def build_server(deployment: Deployment) -> ApiServer:
    """One API process's uvicorn server (RouteClash when two models' routes clash)."""
    spec = deployment.spec
    edge = build_edge(deployment, build_app(deployment))
    app: Any = edge
    express: ExpressLane | None = ExpressLane(edge)  # model POSTs answered without a task
    if spec.server.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(app, allow_origins=spec.server.cors_origins, allow_methods=["*"], allow_headers=["*"])
        express = None  # every answer takes CORS's headers: all go through the middleware
    config = uvicorn.Config(
        app,
        host=spec.server.host,
        port=spec.server.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # past drain_s the deployment answers what is left (a stream's slow client has CUT_AFTER_S
        # more); uvicorn waits for those answers, and no longer: the process exits within
        # drain_s + 2 s of the signal (what is still open is cancelled; workers: Supervisor.stop).
        # uvicorn's float seconds go to asyncio.timeout: its `int` annotation is narrower than it is
        timeout_graceful_shutdown=deployment.drain_s + CUT_AFTER_S + GRACEFUL_MARGIN_S,  # type: ignore[arg-type]
        server_header=False,
        proxy_headers=False,
        ws="none",  # no WebSocket routes: no upgrade surface either
        http=connection_class(ConnectionLimits.from_spec(spec.server), express),
        timeout_keep_alive=math.ceil(spec.server.keep_alive_s),  # the protocol uses the exact float
    )
    return ApiServer(config, deployment, edge)
