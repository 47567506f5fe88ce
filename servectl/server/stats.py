"""Usage statistics for `GET /stats` (and `servectl stats`): per model and overall,
requests by status, tokens, tokens/s, latency and queue time, batches, workers, cache;
per API key name (never the key), requests and tokens. A key sees its own name's usage and
the models it may use; an admin key every key's (see `servectl.server.auth.Access`).

An edge observer: every answered request is counted once, on the event loop's thread (no
locks). Latency percentiles come from the last `WINDOW` answers of each model; tokens per
second over the last minute from per-second buckets.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from servectl.metrics import Metrics, ModelMetrics
    from servectl.runtime.base import ServedModels
    from servectl.server.asgi import Scope
    from servectl.server.auth import Access
    from servectl.server.request import Request

WINDOW = 10_000  # answers kept per model for latency percentiles
SHARED_WINDOW = 1_000  # of which each of several API processes shares its latest (api_processes)
MINUTE = 60


@dataclass
class Tally:
    """Requests and tokens of one model, one key, or all."""

    statuses: dict[int, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "requests": sum(self.statuses.values()),
            "by_status": {str(s): n for s, n in sorted(self.statuses.items())},
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class PerSecond:
    """Counts in one-second buckets, for the sum over the last minute."""

    def __init__(self) -> None:
        self.buckets = [0] * MINUTE
        self.seconds = [0] * MINUTE

    def add(self, n: int, now: float) -> None:
        second = int(now)
        i = second % MINUTE
        if self.seconds[i] != second:
            self.seconds[i], self.buckets[i] = second, 0
        self.buckets[i] += n

    def last_minute(self, now: float) -> int:
        oldest = int(now) - MINUTE
        return sum(n for n, s in zip(self.buckets, self.seconds, strict=True) if s > oldest)


class ModelStats(Tally):
    def __init__(self) -> None:
        super().__init__()
        self.latency: deque[float] = deque(maxlen=WINDOW)
        self.queue: deque[float] = deque(maxlen=WINDOW)
        self.latency_sum = 0.0
        self.tokens = PerSecond()

    def dump(self) -> dict[str, Any]:
        recent = slice(-SHARED_WINDOW, None)
        return {
            **_tally_dump(self),
            "latency": list(self.latency)[recent],
            "queue": list(self.queue)[recent],
            "latency_sum": self.latency_sum,
            "tokens": [self.tokens.buckets, self.tokens.seconds],
        }

    def merge(self, dump: dict[str, Any]) -> None:
        """Add another API process's counts of this model."""
        _tally_add(self, dump)
        self.latency.extend(dump["latency"])
        self.queue.extend(dump["queue"])
        self.latency_sum += dump["latency_sum"]
        for n, second in zip(*dump["tokens"], strict=True):
            if n:
                self.tokens.add(n, second)


def _tally_dump(tally: Tally) -> dict[str, Any]:
    return {"statuses": tally.statuses, "prompt": tally.prompt_tokens, "completion": tally.completion_tokens}


def _tally_add(tally: Tally, dump: dict[str, Any]) -> None:
    for status, n in dump["statuses"].items():
        tally.statuses[int(status)] = tally.statuses.get(int(status), 0) + n
    tally.prompt_tokens += dump["prompt"]
    tally.completion_tokens += dump["completion"]


class UsageStats:
    """Counts answers by model and by key name (an edge observer)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.clock_started = time.monotonic()
        self.models: dict[str, ModelStats] = {}
        self.keys: dict[str, Tally] = {}

    def __call__(self, scope: Scope, request: Request) -> None:
        name = request.model
        if not name or request.endpoint is None:
            return  # probes, docs, metrics: not usage
        status, elapsed = request.status, request.elapsed
        model = self.models.get(name)
        if model is None:
            model = self.models[name] = ModelStats()
        key = self.keys.get(request.key_name)
        if key is None:
            key = self.keys[request.key_name] = Tally()
        model.statuses[status] = model.statuses.get(status, 0) + 1  # (inlined: every answer pays this)
        key.statuses[status] = key.statuses.get(status, 0) + 1
        model.latency.append(elapsed)
        model.latency_sum += elapsed
        pending = request.pending
        if pending is None:
            return
        if pending.sent_at:
            queued = pending.sent_at - pending.queued_at
            model.queue.append(queued if queued > 0 else 0.0)
        prompt, completion = pending.prompt_tokens, pending.completion_tokens
        if prompt or completion:
            model.prompt_tokens += prompt
            model.completion_tokens += completion
            key.prompt_tokens += prompt
            key.completion_tokens += completion
            model.tokens.add(prompt + completion, time.monotonic())

    def dump(self) -> dict[str, Any]:
        """Its counts as plain data (several API processes add theirs up)."""
        return {
            "started": self.started,
            "models": {name: stats.dump() for name, stats in self.models.items()},
            "keys": {name: _tally_dump(tally) for name, tally in self.keys.items()},
        }

    def add(self, dump: dict[str, Any]) -> None:
        """Add another API process's counts (`dump`)."""
        for name, counts in dump["models"].items():
            self.models.setdefault(name, ModelStats()).merge(counts)
        for name, counts in dump["keys"].items():
            _tally_add(self.keys.setdefault(name, Tally()), counts)

    def report(self, deployment: ServedModels, access: Access | None = None) -> dict[str, Any]:
        """`/stats` as `access` may see it: None (auth off) or an admin key: every model and
        key; any other key: the models it may use, and its own name's usage only."""
        shared = deployment.metrics.shared
        if shared is None:
            return self._report(deployment, deployment.metrics, access)
        total = UsageStats()  # every API process's answers (api_processes)
        total.started, total.clock_started = self.started, self.clock_started
        for counts in shared.snapshot():
            total.add(counts["usage"])
        return total._report(deployment, deployment.metrics.totals(), access)

    def _report(self, deployment: ServedModels, metrics: Metrics, access: Access | None) -> dict[str, Any]:
        now = time.monotonic()
        uptime = now - self.clock_started
        shown = [name for name in deployment.models if access is None or access.sees(name)]
        models = {name: self._model(name, deployment, metrics.model(name), now, uptime) for name in shown}
        seen = [stats for name, stats in self.models.items() if access is None or access.sees(name)]
        if access is None or access.admin:
            keys = {name: tally.report() for name, tally in sorted(self.keys.items())}
        else:  # its own usage only: other keys' names are other tenants
            keys = {access.name: (self.keys.get(access.name) or Tally()).report()}
        overall = Tally()
        for stats in seen:
            for status, n in stats.statuses.items():
                overall.statuses[status] = overall.statuses.get(status, 0) + n
            overall.prompt_tokens += stats.prompt_tokens
            overall.completion_tokens += stats.completion_tokens
        recent = sum(m.tokens.last_minute(now) for m in seen)
        return {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "uptime_s": round(uptime, 3),
            "overall": {**overall.report(), **_rates(overall, recent, uptime)},
            "models": models,
            "keys": keys,
        }

    def _model(
        self, name: str, deployment: ServedModels, metrics: ModelMetrics, now: float, uptime: float
    ) -> dict[str, Any]:
        runtime = deployment.models[name]
        stats = self.models.get(name) or ModelStats()
        batches = sum(metrics.batch_size.counts)
        hits, misses = metrics.cache.get("hit", 0), metrics.cache.get("miss", 0)
        answered = len(stats.latency)
        return {
            **stats.report(),
            **_rates(stats, stats.tokens.last_minute(now), uptime),
            "latency_ms": {
                "mean": round(1000 * stats.latency_sum / max(1, sum(stats.statuses.values())), 3),
                **_percentiles(stats.latency),
                "window": answered,
            },
            "queue_ms": {
                "mean": round(1000 * sum(stats.queue) / max(1, len(stats.queue)), 3),
                **_percentiles(stats.queue),
            },
            "batches": {"count": batches, "mean_size": round(metrics.batch_size.sum / max(1, batches), 3)},
            "workers": {
                "total": len(runtime.slots),
                "ready": runtime.ready_count,
                "restarts": sum(metrics.restarts.values()),
            },
            "cache": {
                "hits": hits,
                "misses": misses,
                "bypassed": metrics.cache.get("bypass", 0),
                "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            },
            "rate_limited": sum(metrics.rate_limited.values()),
        }


def _rates(tally: Tally, last_minute: int, uptime: float) -> dict[str, Any]:
    total = tally.prompt_tokens + tally.completion_tokens
    return {
        "tokens_per_s": {
            "last_minute": round(last_minute / MINUTE, 3),
            "since_start": round(total / max(uptime, 1e-9), 3),
        }
    }


def _percentiles(values: deque[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    ordered = sorted(values)
    last = len(ordered) - 1
    return {"p50": round(1000 * ordered[last // 2], 3), "p99": round(1000 * ordered[(last * 99) // 100], 3)}
