"""The response cache: a model route's answer to an identical request, reused without a
worker.

Identical means the same model (and spec), route and canonical JSON body (keys sorted),
so `{"a": 1, "b": 2}` and `{"b":2,"a":1}` are one entry. Only deterministic answers are
kept: whole 200 answers (streams and errors are not), and OpenAI generation only with
`temperature: 0` or a `seed`. Concurrent identical misses compute once: the first is the
leader, the others wait for its answer (single flight, per process).

Entries live in this process (`MemoryStore`: LRU, TTL) or in Redis (`RedisStore`: shared by
every servectl process using it). Redis unreachable: the answer is computed and not cached,
a warning logged and counted (`servectl_redis_errors_total{use="cache"}`).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from servectl.metrics import ModelMetrics
from servectl.outcome import Reply
from servectl.server.redis_failures import RedisFailures
from servectl.spec import CacheSpec

GENERATION_ROUTES = frozenset({"chat", "completions", "responses"})  # OpenAI's sampled routes


class Store(Protocol):
    async def get(self, key: str) -> Reply | None: ...

    async def put(self, key: str, reply: Reply) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Answers in this process: the least recently used go first past `max_entries`."""

    def __init__(self, spec: CacheSpec) -> None:
        self.ttl_s = spec.ttl_s
        self.max_entries = spec.max_entries
        self.max_bytes = int(spec.max_memory_mb * 2**20)
        self.bytes = 0  # the kept answers' bodies
        self.entries: OrderedDict[str, tuple[float, Reply]] = OrderedDict()

    async def get(self, key: str) -> Reply | None:
        found = self.entries.get(key)
        if found is None:
            return None
        expires, reply = found
        if expires < time.monotonic():
            del self.entries[key]
            self.bytes -= len(reply.body)
            return None
        self.entries.move_to_end(key)
        return reply

    async def put(self, key: str, reply: Reply) -> None:
        replaced = self.entries.pop(key, None)
        if replaced is not None:
            self.bytes -= len(replaced[1].body)
        self.entries[key] = (time.monotonic() + self.ttl_s, reply)
        self.bytes += len(reply.body)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.bytes -= len(dropped.body)

    async def close(self) -> None:
        self.entries.clear()
        self.bytes = 0


_HEAD = struct.Struct("<q")  # a stored answer: its JSON length (-1: all JSON), then its body


class RedisStore:
    """Answers in Redis (SET with an expiry), shared by every servectl process using it."""

    def __init__(self, spec: CacheSpec) -> None:
        import redis.asyncio as redis

        self.client: Any = redis.Redis.from_url(spec.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.ttl_ms = int(spec.ttl_s * 1000)

    async def get(self, key: str) -> Reply | None:
        data = await self.client.get(key)
        if data is None or len(data) < _HEAD.size:
            return None
        (json_length,) = _HEAD.unpack_from(data)
        return Reply(bytes(data[_HEAD.size :]), None if json_length < 0 else json_length)

    async def put(self, key: str, reply: Reply) -> None:
        head = _HEAD.pack(-1 if reply.json_length is None else reply.json_length)
        await self.client.set(key, head + reply.body, px=self.ttl_ms)

    async def close(self) -> None:
        await self.client.aclose()


def cacheable(route: str, body: bytes) -> bytes | None:
    """The canonical form of a request's JSON body, or None when its answer may differ from
    call to call (sampled generation, a stream) or it is not JSON."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict):
        if parsed.get("stream") is True:
            return None
        if route in GENERATION_ROUTES and parsed.get("temperature", 1) != 0 and parsed.get("seed") is None:
            return None
    return orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)


class ResponseCache:
    """One model's cache: keys, the store, single flight, and the counts in /metrics."""

    def __init__(self, spec: CacheSpec, model: str, version: str, metrics: ModelMetrics) -> None:
        self.store: Store = RedisStore(spec) if spec.backend == "redis" else MemoryStore(spec)
        self.max_bytes = spec.max_entry_kb * 1024
        self.prefix = f"servectl:cache:{model}:{version}:"
        self.metrics = metrics
        self.flights: dict[str, asyncio.Future[bool]] = {}  # done: True when the leader's answer was kept
        self.redis_failed = RedisFailures(metrics, "cache", "answers are computed and not cached")

    def key(self, route: str, body: bytes) -> str | None:
        canonical = cacheable(route, body)
        if canonical is None:
            return None
        return self.prefix + hashlib.sha256(route.encode() + b"\0" + canonical).hexdigest()

    def count(self, result: str) -> None:
        self.metrics.cache[result] = self.metrics.cache.get(result, 0) + 1

    async def lookup(self, key: str, give_up: asyncio.Future[Any]) -> tuple[Reply | None, bool]:
        """The cached answer, or None; and whether the caller leads: then it computes the
        answer and must call `finish`. While another caller leads for the same key, wait
        for it (or until `give_up` is done: the request's deadline or its client leaving)."""
        while True:
            while (leader := self.flights.get(key)) is not None:
                await asyncio.wait([leader, give_up], return_when=asyncio.FIRST_COMPLETED)
                if give_up.done():
                    return None, False
                if leader.done() and not leader.result():
                    return None, False  # its answer was not one to keep (an error): each computes its own
            try:
                found = await self.store.get(key)
            except Exception as exc:
                self.redis_failed(exc)
                return None, False  # no cache to fill: compute, leading no one
            if found is not None:
                return found, False
            if key not in self.flights:  # (else another request took the lead while we looked)
                self.flights[key] = asyncio.get_running_loop().create_future()
                return None, True

    async def finish(self, key: str, reply: Reply | None, led: bool = True) -> None:
        """The answer to a key (None: not one to keep); wakes those waiting for it."""
        kept = False
        try:
            if reply is not None and len(reply.body) <= self.max_bytes:
                await self.store.put(key, reply)
                kept = True
        except Exception as exc:
            self.redis_failed(exc)
        finally:
            flight = self.flights.pop(key, None) if led else None
            if flight is not None and not flight.done():
                flight.set_result(kept)

    async def close(self) -> None:
        await self.store.close()
