"""The pieces of servectl.logs in-process: escaping, the buffered access log, the formatters."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator

import pytest

from servectl import logs
from servectl.logs import AccessLog, JSONFormatter, TextFormatter, configure, escape_control


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Root logging state saved and restored; `setup` then points its handler at a StringIO."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    for key in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        monkeypatch.delenv(key, raising=False)
    yield out
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = saved
    logging.captureWarnings(False)


def setup(fmt: str, out: io.StringIO) -> None:
    configure("info", fmt)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)


def test_escape_control() -> None:
    assert escape_control("/predict?q=a b&é") == "/predict?q=a b&é"
    assert escape_control("/x\n2026 ERROR\r\x1b[31m\x7f\x9b\u2028\t") == (
        "/x\\x0a2026 ERROR\\x0d\\x1b[31m\\x7f\\x9b\\u2028\\x09"
    )


def test_access_lines_written_in_batches_within_the_flush_interval(stream: io.StringIO) -> None:
    setup("text", stream)
    access = AccessLog("text")

    async def serve() -> tuple[str, str]:
        for i in range(3):
            access.add("POST", "/predict", 200, 1.25, f"r{i}")
        before = stream.getvalue()
        await asyncio.sleep(logs.FLUSH_S * 2)
        return before, stream.getvalue()

    before, after = asyncio.run(serve())
    assert before == ""  # nothing formatted or written on the request path
    lines = after.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    servectl.access: POST /predict 200 1.2ms rid=r0", lines[0]
    )


def test_a_full_batch_of_access_lines_is_written_without_waiting_for_the_timer(stream: io.StringIO) -> None:
    setup("text", stream)
    access = AccessLog("text")

    async def serve() -> tuple[int, int]:
        for i in range(logs.FLUSH_LINES + 10):
            access.add("POST", "/predict", 200, 1.25, f"r{i}")
        at_once = len(stream.getvalue().splitlines())
        await asyncio.sleep(logs.FLUSH_S * 2)
        return at_once, len(stream.getvalue().splitlines())

    assert asyncio.run(serve()) == (logs.FLUSH_LINES, logs.FLUSH_LINES + 10)  # the rest at the timer


def test_close_writes_what_is_left_and_later_entries_at_once(stream: io.StringIO) -> None:
    setup("json", stream)
    access = AccessLog("json")

    async def serve() -> None:
        access.add("GET", "/a\n\x1b", 401, 0.5, "r1")
        access.close()
        access.add("GET", "/b", 200, 0.5, "r2")

    asyncio.run(serve())
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["path"] == "/a\\x0a\\x1b" and first["status"] == 401 and first["request_id"] == "r1"
    assert first["logger"] == "servectl.access" and first["level"] == "info" and first["ts"].endswith("Z")
    assert first["message"] == "GET /a\\x0a\\x1b 401 0.5ms rid=r1" and second["request_id"] == "r2"


def test_json_formatter_drops_color_message_and_keeps_extras() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, "", 0, "Uvicorn running on %s", ("x",), None)
    record.color_message = "\x1b[1mUvicorn\x1b[0m"
    record.worker = 7
    entry = json.loads(JSONFormatter().format(record))
    assert "color_message" not in entry and entry["worker"] == 7 and entry["message"] == "Uvicorn running on x"


def test_text_formatter_keeps_one_entry_per_line_start() -> None:
    record = logging.LogRecord(
        "w", logging.ERROR, "", 0, "failed\nValueError: x\n2026-01-01 ERROR forged\x1b", (), None
    )
    assert TextFormatter().format(record).split("\n")[1:] == ["    ValueError: x", "    2026-01-01 ERROR forged\\x1b"]


def test_json_configure_captures_warnings_and_quiets_progress_bars(stream: io.StringIO) -> None:
    setup("json", stream)
    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old weights", UserWarning, stacklevel=1)
    [entry] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entry["logger"] == "py.warnings" and "old weights" in entry["message"]


class Writes(io.StringIO):
    """A stream that records each flushed write's size in bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self._mark = 0

    def flush(self) -> None:
        value = self.getvalue()
        if len(value) > self._mark:
            self.sizes.append(len(value[self._mark :].encode()))
            self._mark = len(value)


def test_a_big_batch_of_access_lines_leaves_in_whole_line_writes_a_pipe_never_tears(stream: io.StringIO) -> None:
    out = Writes()
    setup("text", out)  # type: ignore[arg-type]
    access = AccessLog("text")
    for i in range(500):
        access.add("POST", "/predict/é" if i % 7 else "/predict", 200, 1.25, f"r{i}")
    access.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 500 and len(out.sizes) > 1
    assert max(out.sizes) <= logs.ATOMIC_WRITE  # PIPE_BUF: each write is atomic on a pipe
    assert all(chunk.endswith("\n") for chunk in _chunks(out.getvalue(), out.sizes))


def _chunks(text: str, sizes: list[int]) -> list[str]:
    data, found, at = text.encode(), [], 0
    for size in sizes:
        found.append(data[at : at + size].decode())
        at += size
    return found
