"""Metrics of several API processes as one (`server.api_processes` > 1).

A scrape reaches one API process, picked by the kernel; it must still see every request the
server answered. Each API process writes its counts (`Metrics.dump`) to a shared folder
once a second, and a scrape adds up its own live counts and the others' latest: counters
and histograms are sums, gauges too (each process reports only what it holds: its queue,
its requests in each worker; the workers' own figures come from the first process alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("servectl")

EVERY_S = 1.0


class SharedCounts:
    """One API process's part: writes its counts, reads the others'."""

    def __init__(self, directory: str, index: int) -> None:
        self.directory = Path(directory)
        self.index = index
        self.path = self.directory / f"metrics-{index}.msgpack"
        self._timer: asyncio.TimerHandle | None = None
        self._dump: Any = None  # () -> dict, set by start

    def start(self, dump: Any) -> None:
        self._dump = dump
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(msgspec.msgpack.encode(self._dump()))
            os.replace(tmp, self.path)  # a reader sees the old counts or the new, never half
        except OSError as exc:  # the folder went away: the server is stopping
            log.debug("metrics of API process %d not written: %s", self.index, exc)
            return
        self._timer = asyncio.get_running_loop().call_later(EVERY_S, self._write)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def others(self) -> list[dict[str, Any]]:
        """The other API processes' latest counts."""
        found = []
        for path in self.directory.glob("metrics-*.msgpack"):
            if path == self.path:
                continue
            with contextlib.suppress(OSError, msgspec.DecodeError):
                found.append(msgspec.msgpack.decode(path.read_bytes()))
        return found
