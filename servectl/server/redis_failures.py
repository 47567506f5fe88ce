"""Failed Redis calls: counted in `servectl_redis_errors_total{use}` and warned about at most
every WARN_EVERY_S (a down Redis fails every request: one line per request would drown the log)."""

from __future__ import annotations

import logging
import time

from servectl.metrics import ModelMetrics

log = logging.getLogger("servectl.redis")
WARN_EVERY_S = 10.0


class RedisFailures:
    def __init__(self, metrics: ModelMetrics, use: str, consequence: str) -> None:
        self.metrics = metrics
        self.use = use  # the label: cache, rate_limit
        self.consequence = consequence  # what happens meanwhile, for the warning
        self._warned = -WARN_EVERY_S

    def __call__(self, exc: Exception) -> None:
        self.metrics.redis_errors[self.use] = self.metrics.redis_errors.get(self.use, 0) + 1
        now = time.monotonic()
        if now - self._warned > WARN_EVERY_S:
            self._warned = now
            log.warning("%s: Redis unreachable (%s); %s", self.use.replace("_", " "), exc, self.consequence)
