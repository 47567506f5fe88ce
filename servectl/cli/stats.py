"""`servectl stats URL`: a running server's /stats as a table (`stats_view`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    pass

from servectl.cli.common import console


def stats(
    url: Annotated[str, typer.Argument(help="The running server, e.g. http://127.0.0.1:8000.")],
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SERVECTL_API_KEY",
            help="A key of the server (needed while it has any): a key sees its own usage, an admin key every key's.",
        ),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between refreshes with --watch.")] = 2.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the raw JSON of /stats instead of tables.")] = False,
) -> None:
    """Print a running server's usage: requests, tokens, latency, batches, workers and cache per
    model; requests and tokens per API key name."""
    import servectl.cli.stats_view as stats_view

    try:
        if json_out:
            typer.echo(orjson.dumps(stats_view.fetch(url, api_key), option=orjson.OPT_INDENT_2).decode())
        elif watch:
            try:
                stats_view.watch(url, api_key, interval)
            except KeyboardInterrupt:
                return
        else:
            Console(soft_wrap=False).print(stats_view.render(stats_view.fetch(url, api_key), url))
    except stats_view.StatsUnavailable as exc:
        console.print(f"[bold red]stats:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
