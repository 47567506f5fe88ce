"""Rate limits per API key: token buckets for requests and for tokens, per model.

A request takes one request from its key's bucket before it is queued, and is refused
(429, Retry-After) while that bucket is empty or its token budget is spent (below zero).
Tokens are charged after the answer, from the prompt and completion tokens the worker
counted, so a long generation may take the budget below zero; the key then waits until
it refills. Answers of a limited route carry OpenAI's `x-ratelimit-*` headers.

The buckets live in this process (`MemoryBuckets`) or in Redis (`RedisBuckets`: one Lua
script per step, so several servectl processes share them). Redis unreachable: the
request is let through with a warning and counted (`servectl_redis_errors_total`),
never counted silently in memory instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from servectl.metrics import ModelMetrics
from servectl.outcome import Failure
from servectl.server.redis_failures import RedisFailures
from servectl.spec import NamedKey, RateSpec


@dataclass(frozen=True)
class Budget:
    """One key's limits on one model: requests and tokens per minute, and the burst."""

    requests_per_minute: float | None
    tokens_per_minute: float | None
    burst: int | None

    @property
    def request_capacity(self) -> float:
        return float(self.burst or self.requests_per_minute or 0)

    @property
    def token_capacity(self) -> float:
        return float(self.tokens_per_minute or 0)


@dataclass(frozen=True)
class Levels:
    """What the buckets hold after a step (None: that limit is off), and how long a refused
    request should wait."""

    requests: float | None
    tokens: float | None
    allowed: bool = True
    retry_after_s: float = 0.0


class Buckets(Protocol):
    async def take(self, name: str, budget: Budget) -> Levels: ...

    async def charge(self, name: str, budget: Budget, tokens: int) -> Levels: ...

    async def close(self) -> None: ...


class _Bucket:
    __slots__ = ("level", "updated")

    def __init__(self, level: float) -> None:
        self.level = level
        self.updated = time.monotonic()

    def refill(self, capacity: float, per_minute: float) -> float:
        now = time.monotonic()
        self.level = min(capacity, self.level + (now - self.updated) * per_minute / 60.0)
        self.updated = now
        return self.level


class MemoryBuckets:
    """Buckets of this process: `{name: bucket}` for requests and for tokens."""

    def __init__(self) -> None:
        self.requests: dict[str, _Bucket] = {}
        self.tokens: dict[str, _Bucket] = {}

    @staticmethod
    def _bucket(table: dict[str, _Bucket], name: str, capacity: float, per_minute: float | None) -> _Bucket | None:
        """Key `name`'s bucket in `table`, refilled to now (None: that limit is off)."""
        if per_minute is None:
            return None
        bucket = table.get(name)
        if bucket is None:
            bucket = table[name] = _Bucket(capacity)
        bucket.refill(capacity, per_minute)
        return bucket

    def _request_bucket(self, name: str, budget: Budget) -> _Bucket | None:
        return self._bucket(self.requests, name, budget.request_capacity, budget.requests_per_minute)

    def _token_bucket(self, name: str, budget: Budget) -> _Bucket | None:
        return self._bucket(self.tokens, name, budget.token_capacity, budget.tokens_per_minute)

    async def take(self, name: str, budget: Budget) -> Levels:
        requests, tokens = self._request_bucket(name, budget), self._token_bucket(name, budget)
        wait = 0.0
        if requests is not None and requests.level < 1:
            wait = (1 - requests.level) * 60.0 / (budget.requests_per_minute or 1)
        if tokens is not None and tokens.level < 0:
            wait = max(wait, -tokens.level * 60.0 / (budget.tokens_per_minute or 1))
        if wait == 0 and requests is not None:
            requests.level -= 1
        return Levels(requests.level if requests else None, tokens.level if tokens else None, wait == 0, wait)

    async def charge(self, name: str, budget: Budget, tokens: int) -> Levels:
        bucket = self._token_bucket(name, budget)
        if bucket is not None:
            bucket.level -= tokens
        return Levels(None, bucket.level if bucket else None)

    async def close(self) -> None:
        return None


# KEYS: requests bucket, tokens bucket. ARGV: request capacity, requests per minute (0: off),
# token capacity, tokens per minute (0: off), tokens to charge (-1: take a request instead).
# A bucket is a hash {level, at} (at: the server's clock in ms). Returns the two levels
# (x1000, -1e15 for an unlimited one), allowed (1/0) and the wait in ms.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function level(key, capacity, per_minute)
  local held = redis.call('HMGET', key, 'level', 'at')
  local l = tonumber(held[1]) or capacity
  local at = tonumber(held[2]) or now
  return math.min(capacity, l + (now - at) * per_minute / 60000)
end
local function store(key, l, capacity, per_minute)
  redis.call('HSET', key, 'level', l, 'at', now)
  redis.call('PEXPIRE', key, math.ceil((capacity - l) * 60000 / per_minute) + 1000)
end
local rcap, rpm, tcap, tpm, charge = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local r, tk = -1e15, -1e15
if rpm > 0 then r = level(KEYS[1], rcap, rpm) end
if tpm > 0 then tk = level(KEYS[2], tcap, tpm) end
if charge >= 0 then
  if tpm > 0 then tk = tk - charge; store(KEYS[2], tk, tcap, tpm) end
  return {math.floor(r * 1000), math.floor(tk * 1000), 1, 0}
end
local wait = 0
if rpm > 0 and r < 1 then wait = (1 - r) * 60000 / rpm end
if tpm > 0 and tk < 0 then wait = math.max(wait, -tk * 60000 / tpm) end
if wait == 0 and rpm > 0 then r = r - 1; store(KEYS[1], r, rcap, rpm) end
return {math.floor(r * 1000), math.floor(tk * 1000), wait == 0 and 1 or 0, math.ceil(wait)}
"""
_OFF = -1e12  # below this, a level Redis returned means "no limit"


class RedisBuckets:
    """Buckets in Redis, shared by every servectl process that uses the same server."""

    def __init__(self, url: str, model: str) -> None:
        import redis.asyncio as redis

        self.client: Any = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.script = self.client.register_script(_SCRIPT)
        self.prefix = f"servectl:rate:{model}:"

    async def _run(self, name: str, budget: Budget, charge: int) -> Levels:
        keys = [f"{self.prefix}{name}:requests", f"{self.prefix}{name}:tokens"]
        args = [
            budget.request_capacity,
            budget.requests_per_minute or 0,
            budget.token_capacity,
            budget.tokens_per_minute or 0,
            charge,
        ]
        requests, tokens, allowed, wait_ms = await self.script(keys=keys, args=args)
        return Levels(
            None if requests / 1000 < _OFF else requests / 1000,
            None if tokens / 1000 < _OFF else tokens / 1000,
            bool(allowed),
            wait_ms / 1000,
        )

    async def take(self, name: str, budget: Budget) -> Levels:
        return await self._run(name, budget, -1)

    async def charge(self, name: str, budget: Budget, tokens: int) -> Levels:
        return await self._run(name, budget, tokens)

    async def close(self) -> None:
        await self.client.aclose()


class RateLimiter:
    """One model's limits: each key's budget (its own, else `limits.rate`'s) in buckets."""

    def __init__(self, rate: RateSpec, keys: dict[str, NamedKey], model: str, metrics: ModelMetrics) -> None:
        self.default = Budget(rate.requests_per_minute, rate.tokens_per_minute, rate.burst)
        self.budgets = {
            k.name: Budget(
                k.requests_per_minute or rate.requests_per_minute,
                k.tokens_per_minute or rate.tokens_per_minute,
                k.burst or rate.burst,
            )
            for k in keys.values()
        }
        self.buckets: Buckets = RedisBuckets(rate.redis_url, model) if rate.backend == "redis" else MemoryBuckets()
        self.metrics = metrics
        self._redis_failed = RedisFailures(metrics, "rate_limit", "requests are let through unlimited")

    def budget(self, name: str) -> Budget:
        return self.budgets.get(name, self.default)

    async def take(self, name: str) -> tuple[Failure | None, list[tuple[bytes, bytes]]]:
        """A request of key `name` arrives: a 429 Failure if it must wait, and the headers
        its answer carries."""
        budget = self.budget(name)
        if budget.requests_per_minute is None and budget.tokens_per_minute is None:
            return None, []
        try:
            levels = await self.buckets.take(name, budget)
        except Exception as exc:  # Redis down: let it through, loudly
            self._redis_failed(exc)
            return None, []
        headers = rate_headers(budget, levels)
        if levels.allowed:
            return None, headers
        which = "requests" if levels.requests is not None and levels.requests < 1 else "tokens"
        self.metrics.rate_limited[which] = self.metrics.rate_limited.get(which, 0) + 1
        per_minute = budget.requests_per_minute if which == "requests" else budget.tokens_per_minute
        msg = (
            f"rate limit reached for key {name!r}: {per_minute:g} {which} per minute; "
            f"try again in {levels.retry_after_s:.1f}s"
        )
        retry = str(max(1, math.ceil(levels.retry_after_s))).encode()
        return Failure(429, "rate_limit_exceeded", msg), [(b"retry-after", retry), *headers]

    async def charge(self, name: str, tokens: int) -> None:
        """Charge an answer's tokens to key `name`."""
        budget = self.budget(name)
        if budget.tokens_per_minute is None or tokens <= 0:
            return
        try:
            await self.buckets.charge(name, budget, tokens)
        except Exception as exc:
            self._redis_failed(exc)

    async def close(self) -> None:
        await self.buckets.close()


def rate_headers(budget: Budget, levels: Levels) -> list[tuple[bytes, bytes]]:
    """OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`."""
    headers = []
    for which, per_minute, capacity, level in (
        ("requests", budget.requests_per_minute, budget.request_capacity, levels.requests),
        ("tokens", budget.tokens_per_minute, budget.token_capacity, levels.tokens),
    ):
        if per_minute is None or level is None:
            continue
        reset = max(0.0, capacity - level) * 60.0 / per_minute
        headers += [
            (f"x-ratelimit-limit-{which}".encode(), str(int(per_minute)).encode()),
            (f"x-ratelimit-remaining-{which}".encode(), str(max(0, math.floor(level))).encode()),
            (f"x-ratelimit-reset-{which}".encode(), duration(reset).encode()),
        ]
    return headers


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{int(rest)}s"
