"""Wiring for `servectl bench`: spec or URL, progress, table, files; exit codes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from servectl.bench import report as show
from servectl.bench.runner import BenchError, BenchOptions, bench, served
from servectl.spec import DeploymentSpec, Spec

__all__ = ["BenchOptions", "run_bench"]


def pick_model(names: list[str], wanted: str | None, where: str) -> int:
    """The index of the model to load: `--model`, or the only one; several and no `--model`
    (or an unknown one) is an error naming them all."""
    listed = ", ".join(names)
    if wanted is None:
        if len(names) == 1:
            return 0
        raise BenchError(f"{where} serves {len(names)} models ({listed}): pick one with --model NAME")
    if wanted not in names:
        raise BenchError(f"--model {wanted}: {where} serves no such model, only {listed}")
    return names.index(wanted)


def _spec_info(spec: Spec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "route": spec.api.path,
        "max_batch_size": spec.batching.max_batch_size,
        "handler": spec.handler,
        "backend": spec.model.backend,
    }


def _url_info(url: str, api_key: str | None, model: str | None) -> dict[str, Any]:
    """The loaded model's figures from `GET /info` (its `models`, or, from an older server, its
    top level); empty when the server does not say, unless `model` must be found there."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        info = httpx.get(url + "/info", headers=headers, timeout=5).json()
        models = info.get("models") or [info]
        chosen = models[pick_model([str(m["name"]) for m in models], model, url)]
        return {
            "name": chosen["name"],
            "route": chosen["api"]["path"],
            "max_batch_size": chosen["batching"]["max_batch_size"],
            "handler": chosen["handler"],
            "backend": chosen["backend"],
        }
    except (httpx.HTTPError, KeyError, ValueError, TypeError, AttributeError):
        if model is not None:
            raise BenchError(f"--model {model}: cannot read the models {url}/info serves") from None
        return {}


def run_bench(
    target: str,
    options: BenchOptions,
    console: Console,
    json_out: Path | None,
    plot_out: Path | None,
    compare_to: Path | None,
    load_deployment: Callable[[Path, list[str]], DeploymentSpec],
) -> int:
    """Serve a spec (every model of it) or reach a URL, load one model's route; the exit code."""
    progress = Progress(
        TextColumn("[bold]c={task.fields[level]}"), BarColumn(), TimeRemainingColumn(), console=console, transient=True
    )
    tasks: dict[int, Any] = {}

    def on_level(level: int, seconds: float) -> None:
        for task in tasks.values():
            progress.update(task, completed=100)
        tasks[level] = progress.add_task("", total=100, level=level)
        if seconds:
            progress.start_task(tasks[level])

    try:
        if target.startswith(("http://", "https://")):
            if options.baseline:
                raise BenchError("--baseline needs a spec (it loads the handler in-process)")
            url = target.rstrip("/")
            info = _url_info(url, options.api_key, options.model)
            with progress:
                report = bench(url, options, None, info, on_level)
        else:
            deployment = load_deployment(Path(target), [])
            names = [m.name for m in deployment.models]
            spec = deployment.models[pick_model(names, options.model, target)]
            baseline = None
            with served(Path(target), []) as (url, pid):
                if options.baseline:
                    from servectl.bench.baseline import measure_baseline
                    from servectl.bench.runner import resolve_payload

                    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
                    payload = resolve_payload(options.payload, url, options.route or spec.api.path, headers)
                    console.print("measuring the raw model in-process ...")
                    baseline = measure_baseline(spec, payload)
                with progress:
                    report = bench(url, options, pid, _spec_info(spec), on_level, baseline)
    except BenchError as exc:
        console.print(f"[bold red]bench failed:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted before any level finished[/]")
        return 130
    wide = Console(width=max(console.width, 200)) if not console.is_terminal else console
    wide.print(show.table(report))
    if report.get("interrupted"):
        console.print("[yellow]interrupted: the figures above are what was measured so far[/]")
    for level in report["levels"]:
        if level.get("client_bound"):
            console.print(
                f"[yellow]c={level['concurrency']}: the load generator used "
                f"{level['client_cpu_percent']}% CPU; figures are client-bound (try --procs)[/]"
            )
    if json_out:
        json_out.write_text(json.dumps(report, indent=2, sort_keys=True) + os.linesep)
    if plot_out:
        show.plot(report, plot_out)
    if compare_to:
        for line in show.compare(json.loads(compare_to.read_text()), report):
            console.print(line, highlight=False)
    return 130 if report.get("interrupted") else 0
