"""Stock uvicorn (httptools) serving tests/apps/square.py: the peer of raw-framing comparisons."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from servectl.bench.runner import free_port

from support.paths import ROOT


class StockUvicorn:
    """Stock uvicorn (httptools) serving tests/apps/square.py: the peer of raw-framing comparisons."""

    def __init__(self, port: int) -> None:
        self.port = port


@contextlib.contextmanager
def running_stock_uvicorn() -> Iterator[StockUvicorn]:
    """Stock uvicorn started on a free port and answering; terminated at the end."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "tests" / "apps"), "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--http", "httptools", "--log-level", "warning", "--no-access-log", "square:app"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "stock uvicorn did not start"
                time.sleep(0.05)
        yield StockUvicorn(port)
    finally:
        proc.terminate()
        proc.wait(10)
