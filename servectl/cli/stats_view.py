"""`servectl stats URL`: a running server's `/stats` as rich tables (refreshed with --watch)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Group
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


def render(stats: dict[str, Any], url: str) -> Group:
    """The models table, then the keys table."""
    uptime = stats["uptime_s"]
    overall = stats["overall"]
    title = Text.assemble(
        (f"{url}", "bold"),
        f"  up {uptime / 3600:.1f} h" if uptime >= 3600 else f"  up {uptime:.0f} s",
        f"  {overall['requests']:,} requests, {overall['tokens_per_s']['last_minute']:,.1f} tokens/s (last minute)",
    )
    models = Table(title="models", title_justify="left", expand=False)
    for column in (
        "model",
        "requests",
        "statuses",
        "tok/s 1m",
        "tok/s all",
        "prompt tok",
        "compl. tok",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "queue p50",
        "batch",
        "workers",
        "restarts",
        "cache hit",
        "limited",
    ):
        models.add_column(column, justify="left" if column in ("model", "statuses") else "right")
    for name, m in stats["models"].items():
        ratio = m["cache"]["hit_ratio"]
        models.add_row(
            name,
            f"{m['requests']:,}",
            _statuses(m["by_status"]),
            f"{m['tokens_per_s']['last_minute']:,.1f}",
            f"{m['tokens_per_s']['since_start']:,.1f}",
            f"{m['prompt_tokens']:,}",
            f"{m['completion_tokens']:,}",
            _ms(m["latency_ms"]["mean"]),
            _ms(m["latency_ms"]["p50"]),
            _ms(m["latency_ms"]["p99"]),
            _ms(m["queue_ms"]["p50"]),
            f"{m['batches']['mean_size']:.1f}",
            f"{m['workers']['ready']}/{m['workers']['total']}",
            str(m["workers"]["restarts"]),
            "-" if ratio is None else f"{100 * ratio:.0f}%",
            str(m["rate_limited"]),
        )
    keys = Table(title="API keys", title_justify="left", expand=False)
    for column in ("key name", "requests", "statuses", "prompt tok", "compl. tok"):
        keys.add_column(column, justify="left" if column in ("key name", "statuses") else "right")
    for name, k in stats["keys"].items():
        keys.add_row(
            name,
            f"{k['requests']:,}",
            _statuses(k["by_status"]),
            f"{k['prompt_tokens']:,}",
            f"{k['completion_tokens']:,}",
        )
    return Group(title, models, keys)


def watch(url: str, api_key: str | None, every_s: float, rounds: int | None = None) -> None:
    """Refresh the tables every `every_s` until Ctrl-C (or `rounds` refreshes)."""
    from rich.live import Live

    with Live(render(fetch(url, api_key), url), refresh_per_second=4) as live:
        done = 1
        while rounds is None or done < rounds:
            time.sleep(every_s)
            live.update(render(fetch(url, api_key), url))
            done += 1
