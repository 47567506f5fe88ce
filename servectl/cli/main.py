"""The `servectl` command: one module per command, registered here (a thin CLI: each parses
its options and hands them to the package that does the work)."""

from __future__ import annotations

import typer

from servectl import __version__
from servectl.cli.bench import bench
from servectl.cli.client_gen import client_gen
from servectl.cli.convert import convert
from servectl.cli.export import export_app
from servectl.cli.reload import reload
from servectl.cli.serve import serve
from servectl.cli.stats import stats
from servectl.cli.validate import validate

app = typer.Typer(
    help="Serve AI models from one declarative YAML spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(serve)
app.command()(validate)
app.command()(bench)
app.command("client-gen")(client_gen)
app.command()(reload)
app.command()(convert)
app.command()(stats)
app.add_typer(export_app, name="export")


@app.command()
def version() -> None:
    """Print servectl's version."""
    typer.echo(__version__)


def main() -> None:
    app()
