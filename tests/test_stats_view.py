"""`servectl stats` tables stay readable on narrow terminals: at 80 columns every header and
value is shown whole (the columns split into groups), at a wide one in one table."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from servectl.cli.stats_view import COLUMNS, GROUPS, render


def model(requests: int) -> dict[str, Any]:
    return {
        "requests": requests,
        "by_status": {"200": requests - 7, "404": 3, "422": 4},
        "tokens_per_s": {"last_minute": 1234.5, "since_start": 987.6},
        "prompt_tokens": 123456,
        "completion_tokens": 654321,
        "latency_ms": {"mean": 12.3, "p50": 10.1, "p99": 45.6},
        "queue_ms": {"p50": 0.4},
        "batches": {"mean_size": 7.5},
        "workers": {"ready": 2, "total": 3, "restarts": 1},
        "cache": {"hit_ratio": 0.25},
        "rate_limited": 17,
    }


STATS = {
    "uptime_s": 42,
    "overall": {"requests": 3000, "tokens_per_s": {"last_minute": 2469.0}},
    "models": {"text-stats": model(1000), "a-rather-long-model-name": model(2000)},
    "keys": {"team-a": {"requests": 5, "by_status": {"200": 5}, "prompt_tokens": 10, "completion_tokens": 20}},
}
VALUES = ["1,000", "2,000", "2xx:993 4xx:7", "1,234.5", "987.6", "123,456", "654,321", "12.3", "10.1", "45.6"]
VALUES += ["0.4", "7.5", "2/3", "25%", "17", "team-a"]


def shown(width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, soft_wrap=False, color_system=None).print(render(STATS, "http://127.0.0.1:8000"))
    return out.getvalue()


def test_every_header_and_value_whole_at_80_and_120_columns() -> None:
    for width in (80, 120):
        text = shown(width)
        assert max(map(len, text.splitlines())) <= width
        for header in [*COLUMNS, "key name", "compl. tok"]:
            assert header in text, (width, header)
        for value in VALUES:
            assert value in text, (width, value)
        # a long model name folds onto more lines: no character lost
        assert "".join(text.split()).count("a-rather-long-model-name") >= 1, text
        assert "…" not in text
        assert sum(len(columns) for columns in GROUPS.values()) == len(COLUMNS)


def test_one_table_when_the_terminal_is_wide() -> None:
    text = shown(250)
    assert "models: latency" not in text and " p99 ms " in text
    row = next(line for line in text.splitlines() if line.startswith("│ text-stats"))
    assert "2xx:993 4xx:7" in row and "2/3" in row  # the whole row of a model on one line
    assert "models: latency" in shown(80)
