"""`servectl serve`: build the deployment, show what will run, serve until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from servectl.deployment import Deployment
from servectl.logs import configure
from servectl.runtime.devices import plan_slots
from servectl.runtime.scheduler import CUT_AFTER_S
from servectl.server.app import build_app
from servectl.server.edge import RequestContext, build_edge
from servectl.server.listen import ListenError, bind, raise_fd_limit
from servectl.server.protocol import ConnectionLimits, protocol_class
from servectl.server.streams import CutStreamsAreExpected
from servectl.spec import Spec

log = logging.getLogger("servectl")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Server(uvicorn.Server):
    """uvicorn with servectl's signal policy: the first SIGTERM, SIGINT or SIGHUP drains
    (in-flight work finishes within limits.drain_s, then what is left gets a 503), a second
    one exits now. Workers ignore these signals: only this process decides when they stop."""

    def __init__(self, config: uvicorn.Config, deployment: Deployment, edge: RequestContext) -> None:
        super().__init__(config)
        self.deployment = deployment
        self.edge = edge

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if self.should_exit:
            log.warning("second %s: exiting now", name)
            self.deployment.supervisor.kill_all()
            if self.edge.access_log is not None:
                self.edge.access_log.flush()  # the lines of requests answered so far
            os._exit(1)
        log.info("%s: draining for up to %gs, then stopping", name, self.deployment.spec.limits.drain_s)
        self.should_exit = True
        with contextlib.suppress(RuntimeError):  # no loop yet: nothing is in flight
            asyncio.get_running_loop().call_soon_threadsafe(self.deployment.begin_drain)


def summary_rows(spec: Spec, deployment: Deployment, url: str) -> list[tuple[str, str]]:
    b, lim = spec.batching, spec.limits
    rows = [
        ("spec", spec.source),
        ("handler", spec.handler or "-"),
        ("backend", spec.model.backend),
        ("devices", deployment.device_note),
        ("workers", f"{len(deployment.slots)} ({', '.join(s.label for s in deployment.slots)})"),
        ("batching", f"max_batch_size={b.max_batch_size} max_wait_ms={b.max_wait_ms:g}"),
        ("limits", f"timeout_s={lim.timeout_s:g} max_queue={lim.max_queue} max_body_mb={lim.max_body_mb:g}"),
        ("auth", f"{len(spec.auth.api_keys)} API key(s)" if spec.auth.api_keys else "off"),
        ("url", f"{url}{spec.api.path}"),
        ("docs", f"{url}/docs"),
    ]
    return rows


def summary(spec: Spec, deployment: Deployment, url: str) -> Table:
    table = Table(title=f"servectl: {spec.name}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for k, v in summary_rows(spec, deployment, url):
        table.add_row(k, v)
    return table


def announce(spec: Spec, deployment: Deployment, url: str, console: Console) -> None:
    """The start-up summary: a table on the console; with JSON logs, one JSON line on stderr
    instead, and the table only for a person at a terminal (the console is stdout then)."""
    if spec.server.log_format != "json":
        console.print(summary(spec, deployment, url))
        return
    log.info("serving %s at %s", spec.name, url, extra={"summary": dict(summary_rows(spec, deployment, url))})
    if console.is_terminal:
        console.print(summary(spec, deployment, url))


def serve(spec: Spec, console: Console) -> int:
    """Serve a spec until SIGTERM/SIGINT; the exit code (1 when workers cannot start)."""
    configure(spec.server.log_level, spec.server.log_format)
    logging.getLogger("uvicorn.error").addFilter(CutStreamsAreExpected())
    try:  # before any worker loads a model: a port in use is found in milliseconds
        sockets = bind(spec.server.host, spec.server.port)
    except ListenError as exc:
        if spec.server.log_format == "json":
            log.error("servectl could not start: %s", exc)
        console.print(f"[bold red]servectl could not start:[/] {escape(str(exc))}", highlight=False)
        return 1
    raise_fd_limit(spec.server.max_connections)
    slots, note = plan_slots(spec.devices)
    deployment = Deployment(spec, slots, note)
    edge = build_edge(deployment, build_app(deployment))
    app: Any = edge
    if spec.server.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(app, allow_origins=spec.server.cors_origins, allow_methods=["*"], allow_headers=["*"])
    config = uvicorn.Config(
        app,
        host=spec.server.host,
        port=spec.server.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # past drain_s the deployment answers what is left; uvicorn waits for those answers
        timeout_graceful_shutdown=math.ceil(spec.limits.drain_s + CUT_AFTER_S) + 2,
        server_header=False,
        proxy_headers=False,
        ws="none",  # no WebSocket routes: no upgrade surface either
        http=protocol_class(ConnectionLimits.from_spec(spec.server)),
        timeout_keep_alive=math.ceil(spec.server.keep_alive_s),  # the protocol uses the exact float
    )
    server = _Server(config, deployment, edge)
    deployment.on_fatal = lambda _msg: setattr(server, "should_exit", True)
    host = f"[{spec.server.host}]" if ":" in spec.server.host else spec.server.host
    announce(spec, deployment, f"http://{host}:{spec.server.port}", console)
    # Everything built so far (FastAPI, pydantic, the app) lives for the whole run: keep it out
    # of the collector's full passes, which would otherwise scan it while requests wait.
    gc.collect()
    gc.freeze()
    server.run(sockets=sockets)
    if deployment.fatal_error:
        if spec.server.log_format == "json":
            log.error("servectl could not start: %s", deployment.fatal_error)
        console.print(f"[bold red]servectl could not start:[/] {deployment.fatal_error}")
        return 1
    return 0
