"""`servectl validate`: every check that can run without serving (`checks`), `--smoke` too."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
import typer
import yaml
from rich.markup import escape

from servectl.spec import Spec

if TYPE_CHECKING:
    from servectl.handler import Handler

from servectl.cli.common import Overrides, SpecArg, console, load_deployment_args, print_issues


def validate(
    spec: SpecArg = None,
    overrides: Overrides = None,
    print_spec: Annotated[
        bool, typer.Option("--print", help="Print the resolved spec (interpolated, overridden).")
    ] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="Run setup and the handler's example request.")] = False,
) -> None:
    """Check SPEC without serving: YAML, schema, handler import and hooks, model path (every model)."""
    import servectl.cli.checks as checks

    deployment = load_deployment_args(spec, overrides)
    issues, handlers = checks.check_deployment(deployment)
    if issues:
        print_issues(issues)
        raise typer.Exit(1)
    several = len(deployment.models) > 1
    if print_spec:
        resolved = deployment.public_dict() if several else deployment.models[0].public_dict()
        typer.echo(yaml.safe_dump(resolved, sort_keys=False), nl=False)
    for loaded, handler in zip(deployment.models, handlers, strict=True):
        if smoke and handler is not None:
            _smoke(loaded, handler)
        hooks = list(handler.hooks) if handler else []
        name = handler.name if handler else loaded.handler
        parts = (loaded.source, loaded.entry, f"({loaded.name})") if several else (loaded.source,)
        where = " ".join(p for p in parts if p)
        console.print(f"[green]ok[/] {escape(where)}: {name}, hooks {hooks}")


def _smoke(loaded: Spec, handler: Handler) -> None:
    """`validate --smoke`: the handler's example request through the worker's code path; exit 1 unless 200."""
    import servectl.cli.checks as checks
    from servectl.outcome import Failure, Reply
    from servectl.protocols.predict.errors import failure_body

    try:
        answer = checks.smoke(loaded, handler)
    except Exception as exc:
        console.print(f"[bold red]smoke test failed:[/] {exc}")
        raise typer.Exit(1) from None
    if not isinstance(answer, Reply):
        status = answer.status if isinstance(answer, Failure) else 500
        body = failure_body(answer, "smoke") if isinstance(answer, Failure) else repr(answer).encode()
        console.print(f"[bold red]smoke test answered {status}:[/] {body.decode()}", highlight=False)
        raise typer.Exit(1)
    console.print(f"smoke test: 200 {orjson.loads(answer.body)}", highlight=False)
