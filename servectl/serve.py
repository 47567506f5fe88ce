"""`servectl serve`: build the deployment, show what will run, serve until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from servectl.deployment import Deployment
from servectl.deployment_spec import DeploymentSpec
from servectl.logs import configure
from servectl.metrics_share import SharedCounts
from servectl.runtime.hub import PeerHub
from servectl.runtime.launch import ProcessLauncher
from servectl.runtime.scheduler import CUT_AFTER_S
from servectl.server.app import build_app
from servectl.server.edge import RequestContext, build_edge
from servectl.server.express import ExpressLane
from servectl.server.http import connection_class
from servectl.server.limits import ConnectionLimits
from servectl.server.listen import ListenError, bind_group, raise_fd_limit
from servectl.server.router import RouteClash
from servectl.server.streams import CutStreamsAreExpected

log = logging.getLogger("servectl")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACEFUL_MARGIN_S = 0.25  # past the drain and a stream's cut, for the last answers' connections to close


class _Server(uvicorn.Server):
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


def summary_rows(deployment: Deployment, url: str) -> list[tuple[str, str]]:
    spec = deployment.spec
    rows = [("spec", ", ".join(spec.sources))]
    for model in deployment.models.values():
        m = model.spec
        b, lim = m.batching, m.limits
        prefix = f"{m.name} " if deployment.several else ""
        rows += [
            (f"{prefix}handler", m.handler or "-"),
            (f"{prefix}backend", m.model.backend),
            (f"{prefix}devices", model.device_note),
            (f"{prefix}workers", f"{len(model.slots)} ({', '.join(s.label for s in model.slots)})"),
            (f"{prefix}batching", f"max_batch_size={b.max_batch_size} max_wait_ms={b.max_wait_ms:g}"),
            (
                f"{prefix}limits",
                f"timeout_s={lim.timeout_s:g} max_queue={lim.max_queue} max_body_mb={lim.max_body_mb:g}",
            ),
            (f"{prefix}url", f"{url}{m.api.path}" + (f" (+ {m.api.kind} routes)" if m.api.kind != "predict" else "")),
        ]
    if spec.server.api_processes > 1:
        rows.append(("api processes", f"{spec.server.api_processes} (SO_REUSEPORT, each reaching every worker)"))
    rows += [
        ("auth", f"{len(spec.auth.named_keys())} API key(s)" if spec.auth.named_keys() else "off"),
        ("docs", f"{url}/docs"),
    ]
    return rows


def summary(deployment: Deployment, url: str) -> Table:
    title = f"servectl: {', '.join(deployment.models)}"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for k, v in summary_rows(deployment, url):
        table.add_row(k, v)
    return table


def announce(deployment: Deployment, url: str, console: Console) -> None:
    """The start-up summary: a table on the console; with JSON logs, one JSON line on stderr
    instead, and the table only for a person at a terminal (the console is stdout then)."""
    if deployment.spec.server.log_format != "json":
        console.print(summary(deployment, url))
        return
    names = ", ".join(deployment.models)
    log.info("serving %s at %s", names, url, extra={"summary": dict(summary_rows(deployment, url))})
    if console.is_terminal:
        console.print(summary(deployment, url))


def serve(
    spec: DeploymentSpec, console: Console, reload_from: tuple[Sequence[Path], Sequence[str]] | None = None
) -> int:
    """Serve a deployment until SIGTERM/SIGINT; the exit code (1 when workers cannot start).
    `reload_from`: the spec files and overrides a reload (SIGHUP, /admin) re-reads."""
    configure(spec.server.log_level, spec.server.log_format)
    logging.getLogger("uvicorn.error").addFilter(CutStreamsAreExpected())
    processes = spec.server.api_processes
    try:  # before any worker loads a model: a port in use is found in milliseconds
        groups = bind_group(spec.server.host, spec.server.port, processes)
    except ListenError as exc:
        if spec.server.log_format == "json":
            log.error("servectl could not start: %s", exc)
        console.print(f"[bold red]servectl could not start:[/] {escape(str(exc))}", highlight=False)
        return 1
    raise_fd_limit(spec.server.max_connections)
    if spec.runtime.kind == "ray":  # joined from the main thread: Ray's exit hooks need it
        from servectl.runtime.ray import cluster

        cluster.connect(spec.runtime)
    with contextlib.ExitStack() as cleanup:
        launcher = None
        if processes > 1:  # each worker listens beside its pipe for the other API processes
            socket_dir = tempfile.mkdtemp(prefix="servectl-")
            cleanup.callback(shutil.rmtree, socket_dir, True)
            launcher = ProcessLauncher(socket_dir)
        deployment = Deployment(spec, reload_from=reload_from, launcher=launcher)
        if processes > 1:
            deployment.hub = PeerHub(deployment, groups[1:], reload_from, socket_dir)
            deployment.metrics.shared = SharedCounts(socket_dir, 0, deployment.counts)
        return _serve(deployment, groups[0], console)


def _serve(deployment: Deployment, sockets: list[socket.socket], console: Console) -> int:
    spec = deployment.spec
    try:
        server = build_server(deployment)
    except RouteClash as exc:
        console.print(f"[bold red]servectl could not start:[/] {escape(str(exc))}", highlight=False)
        return 1
    deployment.on_fatal = lambda _msg: setattr(server, "should_exit", True)
    host = f"[{spec.server.host}]" if ":" in spec.server.host else spec.server.host
    announce(deployment, f"http://{host}:{spec.server.port}", console)
    # Everything built so far (FastAPI, pydantic, the app) lives for the whole run: keep it out
    # of the collector's full passes, which would otherwise scan it while requests wait.
    gc.collect()
    gc.freeze()
    server.run(sockets=sockets)
    if spec.runtime.kind == "ray":
        from servectl.runtime.ray import cluster

        cluster.shutdown()
    if deployment.fatal_error:
        if spec.server.log_format == "json":
            log.error("servectl could not start: %s", deployment.fatal_error)
        console.print(f"[bold red]servectl could not start:[/] {deployment.fatal_error}")
        return 1
    return 0


def build_server(deployment: Deployment) -> _Server:
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
    return _Server(config, deployment, edge)
