"""What the commands share: the console, the spec arguments, loading a deployment from the
command line (exit 1 listing every problem), durations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from servectl.spec import DEFAULT_SPEC, DeploymentSpec, SpecError, SpecIssue, load_deployment

if TYPE_CHECKING:
    pass


console = Console(stderr=True, soft_wrap=True)  # one line per error, whatever the width

SpecArg = Annotated[
    Path | None,
    typer.Argument(help="Deployment spec (YAML). Omit to use the built-in quickstart spec."),
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="More spec files of the same deployment, then dotlist overrides, e.g. batching.max_batch_size=64 "
        "server.port=9000 (several models: models.NAME.batching.max_batch_size=64)."
    ),
]


def split_args(spec_path: Path | None, overrides: list[str] | None) -> tuple[list[Path], list[str]]:
    """The spec files and the dotlist overrides of the command line."""
    args = [*([str(spec_path)] if spec_path is not None else []), *(overrides or [])]
    # `servectl serve k=v` with no spec: an argument with `=` is an override unless it is a file
    paths = [Path(a) for a in args if "=" not in a or Path(a).exists()]
    settings = [a for a in args if "=" in a and not Path(a).exists()]
    return paths or [DEFAULT_SPEC], settings


def load_deployment_args(
    spec_path: Path | None,
    overrides: list[str] | None,
    also: Callable[[list[Path]], list[SpecIssue]] | None = None,
) -> DeploymentSpec:
    """The spec files and overrides of the command line, loaded; exit 1 listing the problems
    (with those `also` finds in the files, when they do not load: `validate`'s handlers)."""
    paths, settings = split_args(spec_path, overrides)
    if paths == [DEFAULT_SPEC]:
        console.print(f"[yellow]No spec given: serving the built-in default[/] ({DEFAULT_SPEC})")
    try:
        return load_deployment(paths, settings)
    except SpecError as exc:
        print_issues([*exc.issues, *(also(paths) if also else [])])
        raise typer.Exit(1) from None


def print_issues(issues: Sequence[object]) -> None:
    console.print(f"[bold red]{len(issues)} problem(s) in the spec:[/]")
    for issue in issues:
        console.print(f"  [red]x[/] {escape(str(issue))}", highlight=False)


def parse_duration(text: str) -> float:
    """`10s`, `1.5m`, `500ms` or plain seconds."""
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)
