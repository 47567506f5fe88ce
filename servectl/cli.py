"""The `servectl` command line: parses arguments and delegates; no logic lives here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
import yaml
from rich.console import Console
from rich.markup import escape

from servectl import __version__
from servectl.spec import DEFAULT_SPEC, DeploymentSpec, Spec, SpecError, load_deployment

if TYPE_CHECKING:
    from servectl.handler import Handler

app = typer.Typer(
    help="Serve AI models from one declarative YAML spec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # one line per error, whatever the width

from servectl.export.cli import export_app  # noqa: E402  (its commands import from here when run)

app.add_typer(export_app, name="export")

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


def _split_args(spec_path: Path | None, overrides: list[str] | None) -> tuple[list[Path], list[str]]:
    """The spec files and the dotlist overrides of the command line."""
    args = [*([str(spec_path)] if spec_path is not None else []), *(overrides or [])]
    # `servectl serve k=v` with no spec: an argument with `=` is an override unless it is a file
    paths = [Path(a) for a in args if "=" not in a or Path(a).exists()]
    settings = [a for a in args if "=" in a and not Path(a).exists()]
    return paths or [DEFAULT_SPEC], settings


def _load_deployment(spec_path: Path | None, overrides: list[str] | None) -> DeploymentSpec:
    """The spec files and overrides of the command line, loaded; exit 1 listing the problems."""
    paths, settings = _split_args(spec_path, overrides)
    if paths == [DEFAULT_SPEC]:
        console.print(f"[yellow]No spec given: serving the built-in default[/] ({DEFAULT_SPEC})")
    try:
        return load_deployment(paths, settings)
    except SpecError as exc:
        _print_issues(exc.issues)
        raise typer.Exit(1) from None


def _print_issues(issues: Sequence[object]) -> None:
    console.print(f"[bold red]{len(issues)} problem(s) in the spec:[/]")
    for issue in issues:
        console.print(f"  [red]x[/] {escape(str(issue))}", highlight=False)


@app.command()
def serve(spec: SpecArg = None, overrides: Overrides = None) -> None:
    """Serve SPEC (one or more spec files, one or more models) over HTTP until SIGTERM or Ctrl-C
    (a second one exits at once); SIGHUP reloads every model without downtime."""
    from servectl.processes.serve import serve as run
    from servectl.worker.devices import DeviceError

    loaded = _load_deployment(spec, overrides)
    json_logs = loaded.server.log_format == "json"
    # with JSON logs stderr holds JSON lines only: what is said to a person goes to stdout
    out = Console(soft_wrap=True) if json_logs else console
    try:
        code = run(loaded, out, _split_args(spec, overrides))
    except DeviceError as exc:
        if json_logs:
            logging.getLogger("servectl").error("devices: %s", exc)
        out.print(f"[bold red]devices:[/] {escape(str(exc))}", highlight=False)
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
    """Check SPEC without serving: YAML, schema, handler import and hooks, model path (every model)."""
    from servectl import validate as checks

    deployment = _load_deployment(spec, overrides)
    issues, handlers = checks.check_deployment(deployment)
    if issues:
        _print_issues(issues)
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
    from servectl import validate as checks
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


def _duration(text: str) -> float:
    """`10s`, `1.5m`, `500ms` or plain seconds."""
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


@app.command()
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
        duration_s=None if requests else _duration(duration),
        requests=requests,
        warmup_s=_duration(warmup),
        payload=payload,
        route=route,
        stream=stream,
        api_key=api_key,
        procs=procs,
        engine=engine,
        baseline=baseline,
        model=model,
    )
    raise typer.Exit(run_bench(target, options, console, json_out, plot, compare, _load_deployment))


@app.command("client-gen")
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
            deployment = _load_deployment(Path(target), [*(more or []), *(overrides or [])])
            paths, _ = _split_args(Path(target), more)
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


@app.command()
def reload(
    url: Annotated[str, typer.Argument(help="The running server, e.g. http://127.0.0.1:8000.")],
    model: Annotated[str, typer.Argument(help="The model to reload (its name in the spec).")],
    admin_key: Annotated[
        str | None, typer.Option(envvar="SERVECTL_ADMIN_KEY", help="One of the server's auth.admin_keys.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the new workers' setup.")] = 900.0,
) -> None:
    """Re-read MODEL's spec entry and roll its workers to it without dropping a request."""
    import httpx

    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    address = f"{url.rstrip('/')}/admin/models/{model}/reload"
    try:
        response = httpx.post(address, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        console.print(f"[bold red]reload:[/] cannot reach {escape(address)}: {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": response.text[:300]}}
    if response.status_code != 200:
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        console.print(f"[bold red]reload failed ({response.status_code}):[/] {escape(str(message))}", highlight=False)
        if isinstance(error, dict) and isinstance(error.get("detail"), list):
            for line in error["detail"]:
                console.print(f"  [red]x[/] {escape(str(line))}", highlight=False)
        raise typer.Exit(1)
    console.print(
        f"[green]reloaded[/] {escape(model)}: {body['workers']} worker(s) rolled in {body['seconds']:.2f}s",
        highlight=False,
    )


@app.command()
def convert(
    spec: Annotated[Path, typer.Argument(help="The deployment spec (YAML) whose model to convert.")],
    overrides: Overrides = None,
    to: Annotated[str, typer.Option("--to", help="The format to convert to: onnx (the only one).")] = "onnx",
    out: Annotated[Path, typer.Option(help="The ONNX file to write, e.g. model.onnx.")] = Path("model.onnx"),
    model: Annotated[str | None, typer.Option(help="The model to convert, by name, when the spec has several.")] = None,
    atol: Annotated[
        float, typer.Option(min=0, help="Largest absolute difference allowed between the two models' outputs.")
    ] = 1e-4,
    write_spec: Annotated[
        Path | None, typer.Option(help="Also write a spec serving the ONNX file (backend: onnx) to this path.")
    ] = None,
) -> None:
    """Export SPEC's PyTorch or transformers model to ONNX (dynamic batch and sequence axes), run
    the same sample inputs through both, and fail when they differ by more than --atol."""
    from servectl.convert import ConvertError
    from servectl.convert import convert as run

    if to.lower() != "onnx":
        console.print(f"[bold red]convert:[/] --to {escape(to)}: only onnx is supported", highlight=False)
        raise typer.Exit(1)
    deployment = _load_deployment(spec, overrides)
    names = [m.name for m in deployment.models]
    if model is None and len(names) > 1:
        console.print(
            f"[bold red]convert:[/] {len(names)} models in the spec: pick one with --model ({', '.join(names)})"
        )
        raise typer.Exit(1)
    if model is not None and model not in names:
        console.print(f"[bold red]convert:[/] no model {escape(model)!r} in the spec (models: {', '.join(names)})")
        raise typer.Exit(1)
    chosen = deployment.model(model) if model else deployment.models[0]
    try:
        result = run(chosen, out, atol, write_spec)
    except ConvertError as exc:
        console.print(f"[bold red]convert {escape(chosen.name)}:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"[green]wrote[/] {escape(str(out))} ({escape(result.exporter)})", highlight=False)
    console.print(f"  inputs:  {escape('; '.join(result.inputs))}", highlight=False)
    console.print(f"  outputs: {escape('; '.join(result.outputs))}", highlight=False)
    console.print(f"  checked on: {escape('; '.join(result.samples))}", highlight=False)
    verdict = "[green]ok[/]" if result.ok else "[bold red]too large[/]"
    console.print(
        f"  largest absolute difference: {result.max_diff:.3g} ({escape(result.worst)}), atol {atol:g}: {verdict}",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if not result.ok:
        console.print(
            f"[bold red]convert {escape(chosen.name)}:[/] the ONNX model's outputs differ from the source model's by "
            f"{result.max_diff:.3g} > atol {atol:g}; {escape(str(out))} is left for inspection"
            + (", no spec written" if write_spec else ""),
            highlight=False,
        )
        raise typer.Exit(1)
    if result.spec_path is not None:
        shown = escape(str(result.spec_path))
        console.print(f"[green]wrote[/] {shown}: servectl serve {shown}", highlight=False)


@app.command()
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
    from servectl import stats_view

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


@app.command()
def version() -> None:
    """Print servectl's version."""
    typer.echo(__version__)


def main() -> None:
    app()
