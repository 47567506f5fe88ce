"""Showing a bench report: a rich table, a PNG plot, and the change against an earlier run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

# figures compared by --compare: (label, path into a level, True when higher is better)
FIGURES: list[tuple[str, tuple[str, ...], bool]] = [
    ("rps", ("rps",), True),
    ("p50 ms", ("latency_ms", "p50"), False),
    ("p90 ms", ("latency_ms", "p90"), False),
    ("p99 ms", ("latency_ms", "p99"), False),
    ("max ms", ("latency_ms", "max"), False),
    ("503", ("errors", "503"), False),
    ("504", ("errors", "504"), False),
    ("queue ms", ("server", "queue_ms_mean"), False),
    ("predict ms", ("server", "predict_ms_mean"), False),
    ("batch", ("server", "batch_size_mean"), True),
    ("efficiency", ("efficiency", "ratio"), True),
]
# with --stream: time to the first chunk, and chunks received per second
STREAM_FIGURES: list[tuple[str, tuple[str, ...], bool]] = [
    ("1st chunk p50 ms", ("stream", "first_chunk_ms_p50"), False),
    ("1st chunk p99 ms", ("stream", "first_chunk_ms_p99"), False),
    ("chunks/s", ("stream", "chunks_per_s"), True),
]


def figures(report: dict[str, Any]) -> list[tuple[str, tuple[str, ...], bool]]:
    """The figures a report has: the stream's too when a level streamed."""
    streamed = any("stream" in level for level in report.get("levels", []))
    return FIGURES + STREAM_FIGURES if streamed else FIGURES


def _get(level: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = level
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:,.1f}"
    return str(value)


def table(report: dict[str, Any]) -> Table:
    """Every level as a row; "!" marks client CPU high enough that the figures are client-bound."""
    t = Table(title=f"servectl bench: {report['target']}", title_justify="left")
    t.add_column("c", justify="right", style="bold")
    shown = figures(report)
    for label, _, _ in shown:
        t.add_column(label, justify="right")
    t.add_column("client cpu %", justify="right")
    t.add_column("server cpu %", justify="right")
    for level in report["levels"]:
        client = _fmt(level.get("client_cpu_percent")) + (" !" if level.get("client_bound") else "")
        t.add_row(
            str(level["concurrency"]),
            *(_fmt(_get(level, path)) for _, path, _ in shown),
            client,
            _fmt(_get(level, ("server_process", "cpu_percent"))),
        )
    return t


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per level and figure: old -> new and the relative change."""
    lines = []
    before = {lv["concurrency"]: lv for lv in old.get("levels", [])}
    for level in new["levels"]:
        c = level["concurrency"]
        if c not in before:
            lines.append(f"c={c}: not in the earlier run")
            continue
        for label, path, higher_better in figures(new):
            a, b = _get(before[c], path), _get(level, path)
            if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                continue
            change = (b - a) / a * 100 if a else (0.0 if b == a else float("inf"))
            better = (change > 0) == higher_better if change else None
            verdict = "" if better is None else (" better" if better else " worse")
            lines.append(f"c={c} {label}: {_fmt(a)} -> {_fmt(b)} ({change:+.1f}%{verdict})")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """Throughput and p99 against concurrency; the raw model's throughput as lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'servectl[plot]'") from None
    levels = report["levels"]
    xs = [lv["concurrency"] for lv in levels]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(xs, [lv["rps"] for lv in levels], "o-", color="black", label="served rps")
    baseline = sorted((report.get("baseline") or {}).items(), key=lambda kv: int(kv[0]))
    for (size, rate), color in zip(baseline, ("tab:blue", "tab:orange", "tab:green", "tab:purple"), strict=False):
        ax1.axhline(rate, linestyle="--", linewidth=1, color=color, label=f"raw model, batch {size}")
    ax1.set(
        xscale="log",
        yscale="log" if baseline else "linear",
        xlabel="concurrency",
        ylabel="requests/s",
        title="throughput",
    )
    ax1.legend(fontsize=8)
    ax2.plot(xs, [lv["latency_ms"]["p99"] for lv in levels], "o-", color="tab:red", label="p99")
    ax2.plot(xs, [lv["latency_ms"]["p50"] for lv in levels], "o-", color="tab:gray", label="p50")
    ax2.set(xscale="log", xlabel="concurrency", ylabel="ms", title="latency")
    ax2.legend(fontsize=8)
    fig.suptitle(report["target"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
