"""The in-memory answer store: bounded in entries and in bytes, least recently used first."""

from __future__ import annotations

import asyncio

from servectl.outcome import Reply
from servectl.server.cache import MemoryStore, cacheable
from servectl.spec import CacheSpec


def test_memory_store_keeps_within_its_entries_and_bytes_dropping_the_least_recently_used() -> None:
    async def run() -> None:
        store = MemoryStore(CacheSpec(backend="memory", max_entries=3, max_memory_mb=1))
        for key in "abc":
            await store.put(key, Reply(b"x" * 1000))
        assert await store.get("a") is not None  # a is now the most recently used
        await store.put("d", Reply(b"y"))
        assert await store.get("b") is None and await store.get("a") is not None  # b went first
        await store.put("big", Reply(b"z" * (2**20 - 2000)))  # over the byte budget with the rest
        assert store.bytes <= 2**20 and await store.get("big") is not None
        await store.put("big", Reply(b"small"))  # replacing an entry gives its bytes back
        assert store.bytes == sum(len(r.body) for _, r in store.entries.values())

    asyncio.run(run())


def test_only_deterministic_json_is_cacheable_and_key_order_does_not_matter() -> None:
    assert cacheable("predict", b'{"b": 1, "a": 2}') == cacheable("predict", b'{"a":2,"b":1}')
    assert cacheable("predict", b"not json") is None
    assert cacheable("predict", b'{"stream": true}') is None
    assert cacheable("chat", b'{"messages": []}') is None  # sampled: temperature 1 by default
    assert cacheable("chat", b'{"messages": [], "temperature": 0}') is not None
    assert cacheable("completions", b'{"prompt": "p", "seed": 7}') is not None
