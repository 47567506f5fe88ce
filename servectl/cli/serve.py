"""`servectl serve`: load the spec, hand it to `processes.serve`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    pass

from servectl.cli.common import Overrides, SpecArg, console, load_deployment_args, split_args


def serve(spec: SpecArg = None, overrides: Overrides = None) -> None:
    """Serve SPEC (one or more spec files, one or more models) over HTTP until SIGTERM or Ctrl-C
    (a second one exits at once); SIGHUP reloads every model without downtime."""
    from servectl.processes.serve import serve as run
    from servectl.worker.devices import DeviceError

    loaded = load_deployment_args(spec, overrides)
    json_logs = loaded.server.log_format == "json"
    # with JSON logs stderr holds JSON lines only: what is said to a person goes to stdout
    out = Console(soft_wrap=True) if json_logs else console
    try:
        code = run(loaded, out, split_args(spec, overrides))
    except DeviceError as exc:
        if json_logs:
            logging.getLogger("servectl").error("devices: %s", exc)
        out.print(f"[bold red]devices:[/] {escape(str(exc))}", highlight=False)
        code = 1
    raise typer.Exit(code)
