"""`servectl bench`: parse the options, hand them to `bench`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from servectl.cli.common import console, load_deployment_args, parse_duration


def bench(
    target: Annotated[str, typer.Argument(help="A spec to serve for the run, or the URL of a running server.")],
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrency levels.")] = "1,8,32,64",
    duration: Annotated[str, typer.Option(help="Time per level: 10s, 1m, 500ms.")] = "10s",
    requests: Annotated[int | None, typer.Option(help="Requests per level instead of --duration.")] = None,
    warmup: Annotated[str, typer.Option(help="Unmeasured load before each level.")] = "1s",
    payload: Annotated[
        str | None, typer.Option(help="Request body: a JSON file or JSON text; default: the handler's example.")
    ] = None,
    route: Annotated[
        str | None, typer.Option(help="Path to load (default: the model's api.path, from the spec or GET /info).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="The model to load, by name, when the spec or server has several (its route and batch size)."
        ),
    ] = None,
    stream: Annotated[bool, typer.Option(help="Measure time to first chunk and chunks/s.")] = False,
    api_key: Annotated[
        str | None, typer.Option(envvar="SERVECTL_API_KEY", help="API key for a protected server.")
    ] = None,
    procs: Annotated[int, typer.Option(help="Load-generating processes.")] = 1,
    engine: Annotated[str, typer.Option(help="Load generator: `python` (built in) or `wrk`.")] = "python",
    baseline: Annotated[
        bool, typer.Option(help="Also measure the model's handler in-process at batch 1/8/32/64 (spec only).")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure to this JSON file.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write throughput and p99 plots to this PNG.")] = None,
    compare: Annotated[
        Path | None, typer.Option(help="Print the change of every figure against an earlier --json report.")
    ] = None,
) -> None:
    """Load-test a deployment and say how close it gets to its model's own throughput."""
    from servectl.bench.cli import BenchOptions, run_bench

    options = BenchOptions(
        concurrency=[int(c) for c in concurrency.split(",") if c.strip()],
        duration_s=None if requests else parse_duration(duration),
        requests=requests,
        warmup_s=parse_duration(warmup),
        payload=payload,
        route=route,
        stream=stream,
        api_key=api_key,
        procs=procs,
        engine=engine,
        baseline=baseline,
        model=model,
    )
    raise typer.Exit(run_bench(target, options, console, json_out, plot, compare, load_deployment_args))
