"""`servectl bench` report table: with `--stream` it shows the time to the first chunk and the
chunks per second beside the other figures (not only in `--json`), and `--compare` them too."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from servectl.bench.report import compare, table


def level(stream: bool) -> dict[str, Any]:
    found: dict[str, Any] = {
        "concurrency": 8,
        "rps": 1234.5,
        "latency_ms": {"p50": 12.3, "p90": 20.1, "p99": 30.2, "max": 50.5},
        "errors": {"503": 0, "504": 0},
        "client_cpu_percent": 45.2,
    }
    if stream:
        found["stream"] = {"first_chunk_ms_p50": 21.5, "first_chunk_ms_p99": 35.75, "chunks_per_s": 6172.5}
    return found


def shown(report: dict[str, Any]) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(table(report))
    return out.getvalue()


def test_stream_figures_in_the_table() -> None:
    text = shown({"target": "http://127.0.0.1:1/predict", "levels": [level(stream=True)]})
    for header in ("1st chunk p50 ms", "1st chunk p99 ms", "chunks/s", "rps", "p99 ms"):
        assert header in text
    row = next(line for line in text.splitlines() if line.startswith("│ 8 "))
    assert [cell.strip() for cell in row.split("│")][-6:-3] == ["21.5", "35.8", "6,172.5"]
    plain = shown({"target": "http://127.0.0.1:1/predict", "levels": [level(stream=False)]})
    assert "chunk" not in plain  # a run that did not stream has no such columns


def test_compare_names_the_stream_figures() -> None:
    old = {"levels": [level(stream=True)]}
    new = {"levels": [level(stream=True)]}
    new["levels"][0]["stream"]["chunks_per_s"] = 7000.0
    lines = compare(old, new)
    assert "c=8 chunks/s: 6,172.5 -> 7,000.0 (+13.4% better)" in lines
    assert any(line.startswith("c=8 1st chunk p50 ms: 21.5 -> 21.5") for line in lines)
