"""Production features end to end: rate limits per API key, the response cache (memory and
Redis), and /stats, against real servers with the clients users use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servectl.bench.runner import free_port

from support.paths import ROOT
from support.specs import toolbox_spec

ECHO_LLM = str(ROOT / "handlers" / "echo_llm.py")


def chat(text: str, **extra: object) -> dict:
    return {"model": "echo-llm", "messages": [{"role": "user", "content": text}], **extra}


def test_rate_limits_per_key_openai_headers_and_stats(serve) -> None:
    """Two keys of different request limits and one with a token budget: the official
    OpenAI client sees the x-ratelimit headers and a RateLimitError; /stats counts each
    key's requests and the tokens the answers reported."""
    openai = pytest.importorskip("openai")
    spec = {
        "name": "echo-llm",
        "handler": ECHO_LLM,
        "api": {"kind": "openai"},
        "devices": {"accelerator": "cpu"},
        "auth": {
            "keys": [
                {"key": "k-small", "name": "small", "requests_per_minute": 2},
                {"key": "k-big", "name": "big", "requests_per_minute": 600},
                {"key": "k-tok", "name": "tok", "tokens_per_minute": 6},
            ],
            "admin_keys": ["k-admin"],  # sees every key's usage on /stats (a key sees its own)
        },
        "limits": {"rate": {"requests_per_minute": 120}},
        "server": {"access_log": False},
    }
    server = serve(spec)

    def client(key: str) -> object:
        return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)

    small, big, tok = client("k-small"), client("k-big"), client("k-tok")
    remaining = []
    for _ in range(2):
        raw = small.chat.completions.with_raw_response.create(**chat("one two"))
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        assert raw.parse().choices[0].message.content == "You said: one two"
    assert remaining == ["1", "0"]
    with pytest.raises(openai.RateLimitError) as refused:
        small.chat.completions.create(**chat("three"))
    answer = refused.value.response
    assert 25 <= int(answer.headers["retry-after"]) <= 31, answer.headers  # a request refills in 30 s
    assert refused.value.code == "rate_limit_exceeded" and "'small'" in refused.value.message
    for _ in range(4):  # the other key is not limited by the first one's spending
        assert big.chat.completions.create(**chat("ok")).choices[0].finish_reason == "stop"

    # tokens: charged after the answer, so the first request may overspend; the next waits
    usage = tok.chat.completions.create(**chat("a b c d")).usage
    assert usage.prompt_tokens == 6 and usage.completion_tokens == 6  # "You said: a b c d", words
    with pytest.raises(openai.RateLimitError) as spent:
        tok.chat.completions.create(**chat("again"))
    assert "tokens per minute" in spent.value.message
    assert spent.value.response.headers["x-ratelimit-remaining-tokens"] == "0"

    own = httpx.get(server.url + "/stats", headers={"Authorization": "Bearer k-big"}).json()
    assert list(own["keys"]) == ["big"] and own["keys"]["big"]["by_status"] == {"200": 4}  # no other key's name
    stats = httpx.get(server.url + "/stats", headers={"Authorization": "Bearer k-admin"}).json()
    keys = stats["keys"]
    assert keys["small"]["by_status"] == {"200": 2, "429": 1}
    assert keys["big"]["requests"] == 4 and keys["big"]["by_status"] == {"200": 4}
    assert (keys["tok"]["prompt_tokens"], keys["tok"]["completion_tokens"]) == (6, 6)
    assert not any("k-" in name for name in keys)  # names, never the keys
    model = stats["models"]["echo-llm"]
    assert model["requests"] == 9 and model["by_status"] == {"200": 7, "429": 2}
    assert model["rate_limited"] == 2 and model["workers"] == {"total": 1, "ready": 1, "restarts": 0}
    # 2 x "one two" (4+4), 4 x "ok" (3+3), "a b c d" (6+6)
    assert (model["prompt_tokens"], model["completion_tokens"]) == (8 + 12 + 6, 8 + 12 + 6)
    assert model["latency_ms"]["p50"] > 0 and model["latency_ms"]["p99"] >= model["latency_ms"]["p50"]
    assert model["tokens_per_s"]["last_minute"] > 0 and stats["overall"]["requests"] == 9
    assert httpx.get(server.url + "/stats").status_code == 401  # keys exist: no key sees usage

    shown = subprocess.run(
        [sys.executable, "-m", "servectl", "stats", server.url, "--api-key", "k-admin"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[1]: line for line in shown.stdout.splitlines() if line.startswith("│")}
    assert {"echo-llm", "small", "big", "tok"} <= set(rows)
    assert "2xx:2 4xx:1" in rows["small"] and "4xx:2" in rows["echo-llm"]


def test_cache_answers_identical_requests_without_the_worker(serve) -> None:
    """Hits never reach the worker (its count of predicted items stays put), keys in any
    order are one entry, no-cache recomputes, failures are not kept, and identical requests
    that arrive together are computed once."""
    server = serve(toolbox_spec(cache={"backend": "memory", "ttl_s": 60}, server={"access_log": False}))
    url = server.url + "/predict"
    first = httpx.post(url, json={"x": 3, "sleep": 0})
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    again = httpx.post(url, content=b'{ "sleep": 0,  "x": 3 }', headers={"content-type": "application/json"})
    assert again.headers["x-cache"] == "hit" and again.json() == first.json()
    fresh = httpx.post(url, json={"x": 3, "sleep": 0}, headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "miss"
    assert fresh.json()["items_seen"] == first.json()["items_seen"] + 1  # it did reach the worker
    for _ in range(2):
        failed = httpx.post(url, json={"x": 1, "fail": True})
        assert failed.status_code == 500 and failed.headers["x-cache"] == "miss"

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(client.post(url, json={"x": 5, "sleep": 0.4}) for _ in range(8)))

    answers = asyncio.run(together())
    assert sorted(a.headers["x-cache"] for a in answers) == ["hit"] * 7 + ["miss"]
    assert len({a.json()["items_seen"] for a in answers}) == 1  # one computation for all eight
    assert server.metric("servectl_cache_requests_total", model="toolbox", result="hit") == 8
    assert server.metric("servectl_cache_requests_total", model="toolbox", result="bypass") == 1
    stats = httpx.get(server.url + "/stats").json()["models"]["toolbox"]
    assert stats["cache"]["hits"] == 8 and stats["cache"]["misses"] == 4


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on a free 127.0.0.1 port, stopped after the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        if shutil.which("apt-get") is None:
            pytest.skip("redis-server is not installed and apt-get is not available to install it")
        installed = subprocess.run(
            ["apt-get", "install", "-y", "-q", "redis-server"], capture_output=True, text=True, timeout=300
        )
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip(f"redis-server could not be installed: {installed.stderr[-300:]}")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def test_redis_cache_and_limits_are_shared_by_two_servers(serve, redis_url: str) -> None:
    """Two servectl processes on one Redis: an answer computed by one is a hit on the other,
    and one rate budget covers both. With Redis gone, answers are computed (never silently
    limited or cached in memory instead), a warning logged and the failures counted."""
    shared = {
        "cache": {"backend": "redis", "redis_url": redis_url},
        "limits": {"rate": {"requests_per_minute": 4, "backend": "redis", "redis_url": redis_url}},
        "server": {"access_log": False},
    }
    one, two = serve(toolbox_spec(**shared)), serve(toolbox_spec(**shared))
    computed = httpx.post(one.url + "/predict", json={"x": 7})
    assert computed.headers["x-cache"] == "miss" and computed.headers["x-ratelimit-remaining-requests"] == "3"
    reused = httpx.post(two.url + "/predict", json={"x": 7})
    assert reused.headers["x-cache"] == "hit" and reused.json() == computed.json()
    assert reused.headers["x-ratelimit-remaining-requests"] == "2"  # the other process's request counted
    statuses = [httpx.post(server.url + "/predict", json={"x": 1}).status_code for server in (one, two, one)]
    assert statuses == [200, 200, 429]

    subprocess.run(["redis-cli", "-u", redis_url, "shutdown", "nosave"], capture_output=True, timeout=10)
    time.sleep(0.2)
    down = httpx.post(two.url + "/predict", json={"x": 8})
    assert down.status_code == 200 and down.json()["y"] == 64.0 and down.headers["x-cache"] == "miss"
    assert "x-ratelimit-remaining-requests" not in down.headers
    assert two.metric("servectl_redis_errors_total", model="toolbox", use="cache") >= 1
    assert two.metric("servectl_redis_errors_total", model="toolbox", use="rate_limit") >= 1
    deadline = time.monotonic() + 5
    while "Redis unreachable" not in two.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Redis unreachable" in two.log()
