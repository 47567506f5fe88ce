"""The load generator: closed-loop HTTP/1.1 keep-alive connections on raw asyncio.

Each connection sends a request, parses the answer with httptools (already installed with
uvicorn) and sends the next one at once. No HTTP library sits in between: a load tester
that spends more CPU per request than the server would measure itself.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing as mp
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools


@dataclass
class Target:
    """Where and what to send."""

    url: str
    body: bytes
    api_key: str | None = None
    stream: bool = False

    def request_bytes(self) -> bytes:
        parts = urlsplit(self.url)
        path = parts.path or "/"
        headers = [
            f"POST {path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: application/json",
            f"Content-Length: {len(self.body)}",
        ]
        if self.api_key:
            headers.append(f"Authorization: Bearer {self.api_key}")
        if self.stream:
            headers.append("Accept: application/x-ndjson")
        return ("\r\n".join(headers) + "\r\n\r\n").encode() + self.body

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


@dataclass
class LoadResult:
    """What one run of connections saw; results of several processes merge."""

    latencies: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    chunks: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    connect_errors: int = 0
    first_error: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def merge(self, other: LoadResult) -> None:
        self.latencies += other.latencies
        self.first_chunk += other.first_chunk
        self.chunks += other.chunks
        self.statuses.update(other.statuses)
        self.connect_errors += other.connect_errors
        self.first_error = self.first_error or other.first_error
        self.seconds = max(self.seconds, other.seconds)
        self.cpu_seconds += other.cpu_seconds


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending requests back to back until told to stop."""

    def __init__(
        self, request: bytes, result: LoadResult, budget: _Budget, done: asyncio.Future[None], stream: bool
    ) -> None:
        self.request = request
        self.stream = stream
        self.result = result
        self.budget = budget
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.body: list[bytes] = []
        self.got_chunk = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        if not self.budget.take():
            self._finish()
            return
        self.body, self.got_chunk = [], False
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.result.connect_errors += 1
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self.stream:
            if not self.got_chunk:
                self.got_chunk = True
                self.result.first_chunk.append(time.perf_counter() - self.sent_at)
            self.result.chunks += body.count(b"data: ") or body.count(b"\n") or 1  # SSE events, or NDJSON lines
        if len(self.body) < 64:
            self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.result.latencies.append(time.perf_counter() - self.sent_at)
        self.result.statuses[status] += 1
        if status >= 400 and self.result.first_error is None:
            self.result.first_error = f"{status}: {b''.join(self.body)[:2000].decode(errors='replace')}"
        if self.parser.should_keep_alive():
            self._send()
        else:
            self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is not None or self.budget.remaining():
                self.result.connect_errors += 1
            self.done.set_result(None)

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)


class _Budget:
    """Stop by time (`until`) or by count (`requests`)."""

    def __init__(self, until: float | None, requests: int | None) -> None:
        self.until = until
        self.left = requests

    def take(self) -> bool:
        if self.until is not None and time.perf_counter() >= self.until:
            return False
        if self.left is not None:
            if self.left <= 0:
                return False
            self.left -= 1
        return True

    def remaining(self) -> bool:
        return (self.until is None or time.perf_counter() < self.until) and (self.left is None or self.left > 0)


async def run_connections(target: Target, connections: int, seconds: float | None, requests: int | None) -> LoadResult:
    """Drive `connections` closed-loop connections for `seconds` or `requests` in all."""
    loop = asyncio.get_running_loop()
    result = LoadResult()
    budget = _Budget(time.perf_counter() + seconds if seconds else None, requests)
    host, port = target.address
    request = target.request_bytes()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    waits = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(
                functools.partial(_Connection, request, result, budget, done, target.stream), host, port
            )
        except OSError as exc:
            result.connect_errors += 1
            result.first_error = result.first_error or f"cannot connect to {host}:{port}: {exc.strerror or exc}"
            done.set_result(None)
        waits.append(done)
    await asyncio.gather(*waits)
    result.seconds = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return result


def _process_main(args: tuple[Target, int, float | None, int | None]) -> LoadResult:
    return asyncio.run(run_connections(*args))


def run_load(target: Target, concurrency: int, seconds: float | None, requests: int | None, procs: int) -> LoadResult:
    """Spread `concurrency` connections (and the request count) over `procs` processes."""
    procs = max(1, min(procs, concurrency))
    if procs == 1:
        return asyncio.run(run_connections(target, concurrency, seconds, requests))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    counts: list[int | None] = [None] * procs
    if requests is not None:
        counts = [requests // procs + (1 if i < requests % procs else 0) for i in range(procs)]
    with mp.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(_process_main, [(target, c, seconds, n) for c, n in zip(shares, counts, strict=True)])
    merged = LoadResult()
    for part in parts:
        merged.merge(part)
    return merged


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize(result: LoadResult) -> dict[str, Any]:
    """The figures for one level, in the JSON report's shape."""
    lat = sorted(result.latencies)
    ok = sum(n for s, n in result.statuses.items() if s < 400)
    errors = {str(s): n for s, n in sorted(result.statuses.items()) if s >= 400}
    out: dict[str, Any] = {
        "requests": len(lat),
        "ok": ok,
        "seconds": round(result.seconds, 4),
        "rps": round(len(lat) / result.seconds, 2) if result.seconds else 0.0,
        "latency_ms": {
            "p50": round(percentile(lat, 50) * 1000, 3),
            "p90": round(percentile(lat, 90) * 1000, 3),
            "p99": round(percentile(lat, 99) * 1000, 3),
            "max": round((lat[-1] if lat else 0.0) * 1000, 3),
        },
        "errors": {
            "by_status": errors,
            "503": result.statuses.get(503, 0),
            "504": result.statuses.get(504, 0),
            "connection": result.connect_errors,
        },
        "client_cpu_percent": round(100 * result.cpu_seconds / result.seconds, 1) if result.seconds else 0.0,
    }
    if result.first_chunk:
        out["stream"] = {
            "first_chunk_ms_p50": round(percentile(result.first_chunk, 50) * 1000, 3),
            "first_chunk_ms_p99": round(percentile(result.first_chunk, 99) * 1000, 3),
            "chunks_per_s": round(result.chunks / result.seconds, 2) if result.seconds else 0.0,
        }
    return out
