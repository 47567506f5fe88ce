"""`servectl client-gen`: typed clients and curl examples (`clientgen`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

if TYPE_CHECKING:
    pass

from servectl.cli.common import console, load_deployment_args, split_args


def client_gen(
    target: Annotated[str, typer.Argument(help="A spec (read in-process, no model load) or a running server's URL.")],
    more: Annotated[
        list[str] | None,
        typer.Argument(help="More spec files of the same deployment (one client for every model of them)."),
    ] = None,
    lang: Annotated[str, typer.Option(help="python, typescript (or ts), or curl.")] = "python",
    out: Annotated[
        Path | None, typer.Option(help="File to write (default: client.py, client.ts or CLIENT.md); - for stdout.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="SERVECTL_API_KEY", help="API key to read a protected server's schema.")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Spec override (dotlist), repeatable: --set server.port=9000.")
    ] = None,
) -> None:
    """Generate a typed client of a deployment from its OpenAPI schema: with several models (a spec
    with `models:`, several spec files, or such a server), one client with a group of calls per model."""
    from servectl.clientgen import ClientGenError, from_spec, from_url, generate
    from servectl.handler import HandlerError

    lang = "typescript" if lang == "ts" else lang
    try:
        if target.startswith(("http://", "https://")):
            if more:
                raise ClientGenError(f"a server's URL is the whole deployment: drop {' '.join(more)}")
            source, url = from_url(target, api_key), target.rstrip("/").removesuffix("/openapi.json")
        else:
            deployment = load_deployment_args(Path(target), [*(more or []), *(overrides or [])])
            paths, _ = split_args(Path(target), more)
            shown = " ".join([target, *(a for a in more or [] if Path(a) in paths)])  # the files, as given
            server = deployment.server
            host = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
            source, url = from_spec(deployment, shown), f"http://{host}:{server.port}"
        text = generate(source, lang, url)
    except (ClientGenError, HandlerError) as exc:
        console.print(f"[bold red]client-gen:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    path = out or Path({"python": "client.py", "typescript": "client.ts", "curl": "CLIENT.md"}.get(lang, "client"))
    if str(path) == "-":
        typer.echo(text, nl=False)
        return
    path.write_text(text)
    console.print(f"[green]wrote[/] {path} ({lang} client of {source.origin})", highlight=False)
