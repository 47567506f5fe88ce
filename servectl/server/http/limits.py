"""The limits a client connection lives under (`server.max_header_kb`, `header_timeout_s`,
`keep_alive_s`, `max_connections`), and the count of connections turned away for them."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from servectl.spec import ServerSpec

log = logging.getLogger("servectl")

WARN_EVERY_S = 10.0  # refusals are logged at most this often: a flood must not flood the log


@dataclass(frozen=True)
class ConnectionLimits:
    max_head_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 1000

    @classmethod
    def from_spec(cls, server: ServerSpec) -> ConnectionLimits:
        return cls(server.max_header_kb * 1024, server.header_timeout_s, server.keep_alive_s, server.max_connections)


class Refusals:
    """Counts connections turned away (503, 408, 431) and logs a line now and then."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.logged_at = 0.0

    def add(self, status: int, why: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        now = time.monotonic()
        if now - self.logged_at >= WARN_EVERY_S:
            self.logged_at = now
            total = sum(self.counts.values())
            log.warning("turned a connection away (%d %s); %d turned away since start", status, why, total)


refusals = Refusals()
