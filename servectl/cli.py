"""The `servectl` command line: parses arguments and delegates; no logic lives here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import orjson
import typer
import yaml
from rich.console import Console
from rich.markup import escape

from servectl import __version__
from servectl.spec import DEFAULT_SPEC, Spec, SpecError, load_spec

app = typer.Typer(
    help="Serve AI models from one declarative YAML spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # one line per error, whatever the width

SpecArg = Annotated[
    Path | None,
    typer.Argument(help="Deployment spec (YAML). Omit to use the built-in quickstart spec."),
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Dotlist overrides, e.g. batching.max_batch_size=64 server.port=9000."),
]


def _load(spec_path: Path | None, overrides: list[str] | None) -> Spec:
    if spec_path is not None and "=" in spec_path.name and not spec_path.exists():
        overrides = [str(spec_path), *(overrides or [])]  # `servectl serve k=v` with no spec
        spec_path = None
    if spec_path is None:
        console.print(f"[yellow]No spec given: serving the built-in default[/] ({DEFAULT_SPEC})")
    try:
        return load_spec(spec_path, overrides or [])
    except SpecError as exc:
        _print_issues(exc.issues)
        raise typer.Exit(1) from None


def _print_issues(issues: Sequence[object]) -> None:
    console.print(f"[bold red]{len(issues)} problem(s) in the spec:[/]")
    for issue in issues:
        console.print(f"  [red]x[/] {escape(str(issue))}", highlight=False)


@app.command()
def serve(spec: SpecArg = None, overrides: Overrides = None) -> None:
    """Serve SPEC over HTTP until SIGTERM or Ctrl-C (a second one exits at once)."""
    from servectl.runtime.devices import DeviceError
    from servectl.serve import serve as run

    loaded = _load(spec, overrides)
    try:
        code = run(loaded, console)
    except DeviceError as exc:
        console.print(f"[bold red]devices:[/] {exc}")
        code = 1
    raise typer.Exit(code)


@app.command()
def validate(
    spec: SpecArg = None,
    overrides: Overrides = None,
    print_spec: Annotated[
        bool, typer.Option("--print", help="Print the resolved spec (interpolated, overridden).")
    ] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="Run setup and the handler's example request.")] = False,
) -> None:
    """Check SPEC without serving: YAML, schema, handler import and hooks, model path."""
    from servectl import validate as checks

    loaded = _load(spec, overrides)
    issues, handler = checks.check_spec(loaded)
    if issues:
        _print_issues(issues)
        raise typer.Exit(1)
    if print_spec:
        typer.echo(yaml.safe_dump(loaded.public_dict(), sort_keys=False), nl=False)
    if smoke and handler is not None:
        try:
            _, status, body = checks.smoke(loaded, handler)
        except Exception as exc:
            console.print(f"[bold red]smoke test failed:[/] {exc}")
            raise typer.Exit(1) from None
        if status != 200:
            console.print(f"[bold red]smoke test answered {status}:[/] {body.decode()}")
            raise typer.Exit(1)
        console.print(f"smoke test: 200 {orjson.loads(body)}", highlight=False)
    hooks = list(handler.hooks) if handler else []
    name = handler.name if handler else loaded.handler
    console.print(f"[green]ok[/] {loaded.source}: {name}, hooks {hooks}")


@app.command()
def version() -> None:
    """Print servectl's version."""
    typer.echo(__version__)


def main() -> None:
    app()
