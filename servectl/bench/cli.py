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
from servectl.spec import Spec

__all__ = ["BenchOptions", "run_bench"]


def _spec_info(spec: Spec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "route": spec.api.path,
        "max_batch_size": spec.batching.max_batch_size,
        "handler": spec.handler,
        "backend": spec.model.backend,
    }


def _url_info(url: str, api_key: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        info = httpx.get(url + "/info", headers=headers, timeout=5).json()
        return {
            "name": info["name"],
            "route": info["api"]["path"],
            "max_batch_size": info["batching"]["max_batch_size"],
            "handler": info["handler"],
            "backend": info["backend"],
        }
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return {}


def run_bench(
    target: str,
    options: BenchOptions,
    console: Console,
    json_out: Path | None,
    plot_out: Path | None,
    compare_to: Path | None,
    load_spec: Callable[[Path, list[str]], Spec],
) -> int:
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
            with progress:
                report = bench(
                    target.rstrip("/"), options, None, _url_info(target.rstrip("/"), options.api_key), on_level
                )
        else:
            spec = load_spec(Path(target), [])
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
