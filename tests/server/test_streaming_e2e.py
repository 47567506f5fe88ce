"""Streaming on the predict route, end to end: NDJSON, SSE, batched streams, errors mid-stream,
client disconnects and deadlines stopping the generation."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from support.specs import streamer_spec

spec = streamer_spec


def test_ndjson_and_sse(shared_serve) -> None:
    server = shared_serve(spec())
    first_chunks = server.metric("servectl_stream_first_chunk_seconds_count")
    chunks = server.metric("servectl_stream_chunks_total")
    with httpx.stream("POST", server.url + "/predict", json={"n": 3}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert [c["token"] for c in lines] == [0, 1, 2]
    r = httpx.post(server.url + "/predict", json={"n": 2}, headers={"Accept": "text/event-stream"})
    assert r.headers["content-type"] == "text/event-stream"
    assert r.text == 'data: {"token":0,"of":2,"batch":1}\n\ndata: {"token":1,"of":2,"batch":1}\n\n'
    empty = httpx.post(server.url + "/predict", json={"n": 0})
    assert empty.status_code == 200 and empty.text == ""
    assert server.metric("servectl_stream_first_chunk_seconds_count") - first_chunks == 2
    assert server.metric("servectl_stream_chunks_total") - chunks == 5


def test_batched_streams_end_independently(serve) -> None:
    server = serve(spec(batching={"max_batch_size": 4, "max_wait_ms": 0}))
    url = server.url + "/predict"

    async def one(client: httpx.AsyncClient, body: dict) -> tuple[list[dict], float]:
        async with client.stream("POST", url, json=body) as r:
            chunks = [json.loads(line) async for line in r.aiter_lines() if line]
        return chunks, time.monotonic()

    async def run() -> list[tuple[list[dict], float]]:
        async with httpx.AsyncClient(timeout=30) as client:
            blocker = asyncio.create_task(one(client, {"n": 1, "delay": 0.4}))
            await asyncio.sleep(0.15)  # the four below queue while the blocker runs: one batch
            rest = [asyncio.create_task(one(client, {"n": n, "delay": 0.05})) for n in (1, 3, 8, 5)]
            await blocker
            return await asyncio.gather(*rest)

    results = asyncio.run(run())
    for (chunks, _), n in zip(results, (1, 3, 8, 5), strict=True):
        assert [c["token"] for c in chunks] == list(range(n)) and {c["of"] for c in chunks} == {n}
        assert {c["batch"] for c in chunks} == {4}
    ended = {n: t for (_, t), n in zip(results, (1, 3, 8, 5), strict=True)}
    assert ended[8] - ended[1] > 0.2, "the short stream ended without waiting for the long one"


def test_error_after_first_chunk_is_an_error_event(shared_serve) -> None:
    server = shared_serve(spec())
    with httpx.stream("POST", server.url + "/predict", json={"n": 5, "fail_at": 2}) as r:
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert [c.get("token") for c in lines[:2]] == [0, 1]
    assert "generation failed at step 2" in lines[2]["error"]["message"] and len(lines) == 3
    sse = httpx.post(server.url + "/predict", json={"n": 5, "fail_at": 1}, headers={"Accept": "text/event-stream"})
    assert sse.text.endswith("\n\n") and "event: error\ndata: " in sse.text
    before = httpx.post(server.url + "/predict", json={"n": 5, "fail_at": 0})
    assert before.status_code == 500 and "failed at step 0" in before.json()["error"]["message"]


def test_disconnect_mid_stream_stops_generation(shared_serve) -> None:
    server = shared_serve(spec())

    def chunks() -> float:
        text = httpx.get(server.url + "/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("servectl_stream_chunks_total"))
        return float(line.split()[1])

    before = chunks()  # the shared server's count so far
    with httpx.stream("POST", server.url + "/predict", json={"n": 500, "delay": 0.01}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 5:
                break  # leave mid-stream: the connection closes
    time.sleep(0.5)
    first = chunks()
    time.sleep(0.5)
    assert chunks() == first < before + 100, "generation stopped for the client that left"
    t0 = time.monotonic()
    assert httpx.post(server.url + "/predict", json={"n": 1}).status_code == 200
    assert time.monotonic() - t0 < 1.0  # the worker is free again


def test_deadline_mid_stream_ends_with_timeout_event(serve) -> None:
    server = serve(spec(limits={"timeout_s": 0.5}))
    r = httpx.post(server.url + "/predict", json={"n": 100, "delay": 0.05})
    lines = [json.loads(line) for line in r.text.splitlines() if line]
    assert r.status_code == 200 and 3 <= len(lines) < 20
    assert lines[-1]["error"]["type"] == "timeout"
    assert httpx.post(server.url + "/predict", json={"n": 1}).status_code == 200


def test_non_streaming_route_collects_chunks(serve, tmp_path: Path) -> None:
    server = serve(spec(api={"stream": False}))
    r = httpx.post(server.url + "/predict", json={"n": 3})
    assert r.status_code == 200 and [c["token"] for c in r.json()] == [0, 1, 2]
    failed = httpx.post(server.url + "/predict", json={"n": 3, "fail_at": 1})
    assert failed.status_code == 500
