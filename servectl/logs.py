"""Logging set-up: text or JSON lines, one access line per request with its request id.

The access log is buffered: a request only appends a tuple; lines are formatted and
written in batches at most `FLUSH_S` later, and on shutdown. Request-derived text
(method, path) has its control characters escaped, so a request cannot forge log lines
or send terminal escapes to whoever reads the log.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, Final

import orjson

access_log = logging.getLogger("servectl.access")
_ACCESS = access_log.name

FLUSH_S: Final = 0.1
FLUSH_LINES: Final = 256  # a batch this big is written at once (see AccessLog)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_DROPPED = {"color_message"}  # uvicorn's ANSI-coloured copy of its message
_QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def escape_control(text: str) -> str:
    """`text` with every control or other non-printable character (\\n, \\r, ESC, C1, DEL,
    U+2028...) written as a visible escape: one log entry stays one line, with no terminal codes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}") for c in text)


class TextFormatter(logging.Formatter):
    """The text format, one entry per line start: control characters in a message are escaped
    and its further lines (a traceback, an exception text with newlines) are indented, so no
    text a request or a handler chooses can pass for a log line of its own."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if text.isprintable():
            return text
        return "\n    ".join(escape_control(line.replace("\t", "    ")) for line in text.split("\n"))


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JSONFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed to the logger become keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and k not in _DROPPED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Route every log record (uvicorn's and `warnings` included) to stderr in one format.

    With JSON, progress bars are turned off for this process and the workers it starts
    (they inherit the environment): stderr must hold JSON lines only.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "py.warnings"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.captureWarnings(True)
    if fmt == "json":
        for key, value in _QUIET_ENV.items():
            os.environ.setdefault(key, value)


Entry = tuple[float, str, str, int, float, str]


_TEXT_LINE = "%s,%03d INFO    servectl.access: %s %s %d %.1fms rid=%s\n"  # logging's text shape
ATOMIC_WRITE = 4096  # PIPE_BUF: a write of up to this many bytes to a pipe is never interleaved


def _whole_lines_up_to(lines: list[str], limit: int) -> Iterator[str]:
    """The lines joined into chunks of at most `limit` bytes (a longer line alone), so that
    the lines of several processes writing to one pipe (API processes, workers, a container
    runtime reading stderr) never tear each other's."""
    chunk: list[str] = []
    size = 0
    for text in lines:
        n = len(text) if text.isascii() else len(text.encode())
        if chunk and size + n > limit:
            yield "".join(chunk)
            chunk, size = [], 0
        chunk.append(text)
        size += n
    if chunk:
        yield "".join(chunk)


class AccessLog:
    """Access lines, buffered on the event loop and written in batches.

    `add` is all a request pays: one tuple appended to a deque. The first entry of a batch
    schedules a flush `FLUSH_S` later on the running loop, so an idle server runs no timer;
    a batch of `FLUSH_LINES` is written at once (at 30k requests a second, 100 ms of lines
    took ~3 ms to write, and every request waiting on the loop waited that long: the
    default config's p99 was nearly twice the tuned one's).
    The same fields as a logging call (method, path, status, ms, request_id), in the same
    text or JSON shape, on the root handler's stream (stderr). A writer thread measured no
    cheaper: the GIL serialises the formatting anyway, and the thread adds wake-ups and races.
    """

    def __init__(self, fmt: str) -> None:
        self.json = fmt == "json"
        self._pending: deque[Entry] = deque()
        self._closed = False
        self._second = -1
        self._stamp = ""  # the current second, formatted once
        atexit.register(self.flush)

    def add(self, method: str, path: str, status: int, ms: float, request_id: str) -> None:
        pending = self._pending
        pending.append((time.time(), method, path, status, ms, request_id))
        if len(pending) >= FLUSH_LINES:
            self.flush()
        elif len(pending) == 1:
            if self._closed:
                self.flush()
                return
            try:
                asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # called with no loop running: write it now
                self.flush()

    def close(self) -> None:
        """Write what is left; later entries are written as they come."""
        self._closed = True
        self.flush()

    def flush(self) -> None:
        """Format and write every pending entry with one write (safe to call from a signal
        handler that interrupts a flush: each entry is taken once)."""
        pending = self._pending
        lines = []
        line = self._json_line if self.json else self._text_line
        while pending:
            try:
                entry = pending.popleft()
            except IndexError:
                break
            lines.append(line(*entry))
        if not lines:
            return
        stream = _stream()
        try:
            for chunk in _whole_lines_up_to(lines, ATOMIC_WRITE):
                stream.write(chunk)
                stream.flush()  # one write each: never torn by another process's lines
        except (OSError, ValueError):  # stderr closed or gone: nowhere left to write
            pass

    def _stamp_of(self, second: int) -> str:
        """The current second, formatted once per second rather than once per line."""
        if second != self._second:
            self._second = second
            self._stamp = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
                if self.json
                else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))  # logging's asctime
            )
        return self._stamp

    def _text_line(self, created: float, method: str, path: str, status: int, ms: float, rid: str) -> str:
        if not (path.isprintable() and method.isprintable()):
            method, path = escape_control(method), escape_control(path)
        second = int(created)
        stamp = self._stamp if second == self._second else self._stamp_of(second)
        return _TEXT_LINE % (stamp, (created - second) * 1000, method, path, status, ms, rid)  # (%: faster here)

    def _json_line(self, created: float, method: str, path: str, status: int, ms: float, rid: str) -> str:
        """The JSON formatter's shape, written by hand: only the request's own strings need
        JSON escaping (the request id is already reduced to [A-Za-z0-9._:-])."""
        method, path = escape_control(method), escape_control(path)
        stamp = self._stamp if int(created) == self._second else self._stamp_of(int(created))
        message = orjson.dumps(f"{method} {path} {status} {ms:.1f}ms rid={rid}").decode()
        quoted_method, quoted_path = orjson.dumps(method).decode(), orjson.dumps(path).decode()
        return (
            f'{{"ts":"{stamp}.{int(created % 1 * 1000):03d}Z","level":"info","logger":"{_ACCESS}",'
            f'"message":{message},"method":{quoted_method},"path":{quoted_path},"status":{status},'
            f'"ms":{round(ms, 2)},"request_id":"{rid}"}}\n'
        )


def _stream() -> Any:
    """The root handler's stream, where every other log line goes."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            return handler.stream
    return sys.stderr
