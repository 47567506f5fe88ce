"""Metrics of several API processes as one (`server.api_processes` > 1).

A scrape reaches one API process, picked by the kernel; it must still see every request the
server answered. Each API process writes its counts (`Metrics.dump`, `UsageStats.dump`) to a
shared folder once a second and whenever it is scraped, and a scrape adds up every file:
counters and histograms are sums, gauges too (each process reports only what it holds: its
queue, its requests in each worker; the workers' own figures come from the first process
alone). A counter never goes back, whichever process answers: each file only grows, and a
scrape writes its own file before it reads the others'. The counts of an API process that
died are kept (without its gauges) beside those of the one started in its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("servectl")

EVERY_S = 1.0


class SharedCounts:
    """One API process's part: writes its counts, reads the others'."""

    def __init__(self, directory: str, index: int, dump: Callable[[], dict[str, Any]]) -> None:
        self.directory = Path(directory)
        self.index = index
        self.path = self.directory / f"metrics-{index}.msgpack"
        self._timer: asyncio.TimerHandle | None = None
        self._dump = dump  # this process's counts, as plain data

    def start(self) -> None:
        self._write()

    def _write(self) -> None:
        try:
            self._save(self._dump())
        except OSError as exc:  # the folder went away: the server is stopping
            log.debug("metrics of API process %d not written: %s", self.index, exc)
            return
        self._timer = asyncio.get_running_loop().call_later(EVERY_S, self._write)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def snapshot(self) -> list[dict[str, Any]]:
        """Every API process's counts: this one's now (written first), the others' latest."""
        own = self._dump()
        with contextlib.suppress(OSError):
            self._save(own)
        found = [own]
        for path in self.directory.glob("metrics-*.msgpack"):
            if path == self.path:
                continue
            with contextlib.suppress(OSError, msgspec.DecodeError):
                found.append(msgspec.msgpack.decode(path.read_bytes()))
        return found

    def _save(self, counts: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(msgspec.msgpack.encode(counts))
        os.replace(tmp, self.path)  # a reader sees the old counts or the new, never half


def retire(directory: str, index: int, generation: int) -> None:
    """Keep the counts of API process `index`, which died, under a name of their own (its
    gauges dropped: what it held is gone), before another takes its place and counts anew."""
    path = Path(directory) / f"metrics-{index}.msgpack"
    try:
        counts = msgspec.msgpack.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return
    for model in counts.get("metrics", {}).get("models", {}).values():
        model["gauges"] = {}
    counts.pop("owner", None)
    kept = path.with_name(f"metrics-{index}.{generation}.msgpack")
    kept.write_bytes(msgspec.msgpack.encode(counts))
    path.unlink(missing_ok=True)
