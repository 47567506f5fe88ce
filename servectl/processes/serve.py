"""`servectl serve`: build the deployment, show what will run, serve until told to stop."""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from servectl import protocols
from servectl.logs import configure
from servectl.metrics_share import SharedCounts
from servectl.processes.api_process import api_process_main
from servectl.processes.deployment import Deployment
from servectl.processes.hub import PeerHub
from servectl.processes.server import build_server
from servectl.runtime.launch import ProcessLauncher
from servectl.server.listen import ListenError, bind_group, raise_fd_limit
from servectl.server.router import RouteClash
from servectl.server.streams import CutStreamsAreExpected
from servectl.spec import DeploymentSpec

log = logging.getLogger("servectl")


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
            launcher = ProcessLauncher(protocols.ADAPTERS, socket_dir)
        deployment = Deployment(spec, reload_from=reload_from, launcher=launcher)
        if processes > 1:
            deployment.hub = PeerHub(deployment, groups[1:], reload_from, socket_dir, api_process_main)
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
