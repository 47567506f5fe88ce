"""`servectl stats URL`: a running server's `/stats` as rich tables (refreshed with --watch)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


class StatsUnavailable(Exception):
    """The server could not be reached, or refused (a key is needed, say)."""


def fetch(url: str, api_key: str | None, timeout: float = 10.0) -> dict[str, Any]:
    address = f"{url.rstrip('/')}/stats"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(address, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise StatsUnavailable(f"cannot reach {address}: {exc}") from None
    if response.status_code != 200:
        try:
            error = response.json().get("error", {})
            message = error.get("message", error) if isinstance(error, dict) else error
        except ValueError:
            message = response.text[:200]
        hint = " (pass --api-key or set SERVECTL_API_KEY)" if response.status_code == 401 else ""
        raise StatsUnavailable(f"{address} answered {response.status_code}: {message}{hint}")
    data: dict[str, Any] = response.json()
    return data


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _statuses(by_status: dict[str, int]) -> str:
    groups: dict[str, int] = {}
    for status, n in by_status.items():
        groups[f"{status[0]}xx"] = groups.get(f"{status[0]}xx", 0) + n
    return " ".join(f"{k}:{v}" for k, v in sorted(groups.items())) or "-"


def _cache(m: dict[str, Any]) -> str:
    ratio = m["cache"]["hit_ratio"]
    return "-" if ratio is None else f"{100 * ratio:.0f}%"


# a model's columns: header -> its value, from the model's entry of /stats
COLUMNS: dict[str, Callable[[dict[str, Any]], str]] = {
    "requests": lambda m: f"{m['requests']:,}",
    "statuses": lambda m: _statuses(m["by_status"]),
    "tok/s 1m": lambda m: f"{m['tokens_per_s']['last_minute']:,.1f}",
    "tok/s all": lambda m: f"{m['tokens_per_s']['since_start']:,.1f}",
    "prompt tok": lambda m: f"{m['prompt_tokens']:,}",
    "compl. tok": lambda m: f"{m['completion_tokens']:,}",
    "mean ms": lambda m: _ms(m["latency_ms"]["mean"]),
    "p50 ms": lambda m: _ms(m["latency_ms"]["p50"]),
    "p99 ms": lambda m: _ms(m["latency_ms"]["p99"]),
    "queue p50": lambda m: _ms(m["queue_ms"]["p50"]),
    "batch": lambda m: f"{m['batches']['mean_size']:.1f}",
    "workers": lambda m: f"{m['workers']['ready']}/{m['workers']['total']}",
    "restarts": lambda m: str(m["workers"]["restarts"]),
    "cache hit": _cache,
    "limited": lambda m: str(m["rate_limited"]),
}
# the same columns a few at a time, for a terminal too narrow for them all (80 columns)
GROUPS = {
    "requests": ("requests", "statuses", "limited", "cache hit"),
    "tokens": ("tok/s 1m", "tok/s all", "prompt tok", "compl. tok"),
    "latency": ("mean ms", "p50 ms", "p99 ms", "queue p50", "batch"),
    "workers": ("workers", "restarts"),
}
_LEFT = ("model", "key name", "statuses")


def _table(title: str, headers: Sequence[str], rows: list[list[str]]) -> Table:
    """Headers never cut (each column at least as wide as its header); names and statuses
    fold onto more lines rather than lose characters."""
    table = Table(title=title, title_justify="left", expand=False)
    for header in headers:
        left = header in _LEFT
        table.add_column(
            header,
            justify="left" if left else "right",
            min_width=len(header),
            no_wrap=not left,
            overflow="fold" if left else "ellipsis",
        )
    for row in rows:
        table.add_row(*row)
    return table


class ModelTables:
    """The models' numbers: one table when the terminal is wide enough for every column, else
    one table per group of columns (each starting with the model's name)."""

    def __init__(self, models: dict[str, dict[str, Any]]) -> None:
        self.models = models

    def table(self, title: str, headers: Sequence[str]) -> Table:
        rows = [[name, *(COLUMNS[h](m) for h in headers)] for name, m in self.models.items()]
        return _table(title, ["model", *headers], rows)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = self.table("models", list(COLUMNS))
        natural = Measurement.get(console, options.update(max_width=10_000), wide).maximum  # unclamped
        if natural <= options.max_width:
            yield wide
            return
        for title, headers in GROUPS.items():
            yield self.table(f"models: {title}", headers)


def render(stats: dict[str, Any], url: str) -> Group:
    """The models' tables, then the keys table."""
    uptime = stats["uptime_s"]
    overall = stats["overall"]
    title = Text.assemble(
        (f"{url}", "bold"),
        f"  up {uptime / 3600:.1f} h" if uptime >= 3600 else f"  up {uptime:.0f} s",
        f"  {overall['requests']:,} requests, {overall['tokens_per_s']['last_minute']:,.1f} tokens/s (last minute)",
    )
    key_rows = [
        [
            name,
            f"{k['requests']:,}",
            _statuses(k["by_status"]),
            f"{k['prompt_tokens']:,}",
            f"{k['completion_tokens']:,}",
        ]
        for name, k in stats["keys"].items()
    ]
    keys = _table("API keys", ("key name", "requests", "statuses", "prompt tok", "compl. tok"), key_rows)
    return Group(title, ModelTables(stats["models"]), keys)


def watch(url: str, api_key: str | None, every_s: float, rounds: int | None = None) -> None:
    """Refresh the tables every `every_s` until Ctrl-C (or `rounds` refreshes)."""
    from rich.live import Live

    with Live(render(fetch(url, api_key), url), refresh_per_second=4) as live:
        done = 1
        while rounds is None or done < rounds:
            time.sleep(every_s)
            live.update(render(fetch(url, api_key), url))
            done += 1
