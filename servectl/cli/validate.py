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
    smoke: Annotated[
        bool,
        typer.Option(
            "--smoke",
            help="Also run setup (on the CPU) and answer each route's example request as a worker would "
            "(streams and OpenAI routes included); exit 1 unless every one succeeds.",
        ),
    ] = False,
) -> None:
    """Check SPEC without serving: YAML, schema, handler import and hooks, model path (every model)."""
    import servectl.cli.checks as checks

    deployment = load_deployment_args(spec, overrides, also=checks.handler_issues)
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
            _smoke(loaded)
        name = handler.name if handler else loaded.handler
        parts = (loaded.source, loaded.entry, f"({loaded.name})") if several else (loaded.source,)
        where = " ".join(p for p in parts if p)
        console.print(f"[green]ok[/] {escape(where)}: {escape(str(name))} ({describe(handler)})", highlight=False)


def describe(handler: Handler | None) -> str:
    """What a handler does, in words: its hooks, the OpenAI contract it implements, streaming."""
    if handler is None:
        return "no handler"
    parts = ["hooks " + ", ".join(handler.hooks)] if handler.hooks else []
    contract = [name for name in ("complete", "embed") if callable(getattr(handler.obj, name, None))]
    if contract:
        parts.append("OpenAI contract: " + ", ".join(contract))
    if handler.streams:
        parts.append("streams")
    return "; ".join(parts) or "no hooks"


def _smoke(loaded: Spec) -> None:
    """`validate --smoke`: each route's example through a worker's own loop; exit 1 unless each answers."""
    from servectl.cli.smoke import smoke
    from servectl.outcome import Failure
    from servectl.protocols.predict.errors import failure_body

    try:
        answers = smoke(loaded)
    except Exception as exc:
        console.print(f"[bold red]smoke test failed:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    failed = False
    for answer in answers:
        outcome = answer.outcome
        chunks = f", {len(answer.chunks)} chunk(s)" if answer.chunks else ""
        if answer.ok:
            body = answer.chunks[0] if answer.chunks else getattr(outcome, "body", b"")
            first = "first " if answer.chunks else ""
            shown = _short(orjson.loads(body[: getattr(outcome, "json_length", None) or len(body)]))
            console.print(f"smoke test {answer.route}: 200{chunks}, {first}{escape(shown)}", highlight=False)
            continue
        failed = True
        status = outcome.status if isinstance(outcome, Failure) else 500
        text = failure_body(outcome, "smoke").decode() if isinstance(outcome, Failure) else repr(outcome)
        console.print(f"[bold red]smoke test {answer.route} answered {status}{chunks}:[/] {escape(text)}")
    if failed:
        raise typer.Exit(1)


def _short(value: object, limit: int = 300) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[:limit] + "..."
