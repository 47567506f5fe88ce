"""Hardening, end to end: deadlines, back-pressure, disconnects, crashes, drain, metrics.

Every test runs a real server with real workers, and is bounded in requests and time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from support.specs import toolbox_spec


async def post_many(url: str, bodies: list[dict], timeout: float = 30) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=200)) as client:
        return await asyncio.gather(*(client.post(url, json=b) for b in bodies))


def test_deadline_while_queued_and_while_running(serve) -> None:
    server = serve(toolbox_spec(limits={"timeout_s": 0.5}, batching={"max_batch_size": 1}))
    url = server.url + "/predict"

    async def in_order() -> list[httpx.Response]:  # the slow one reaches the worker first
        async with httpx.AsyncClient(timeout=30) as client:
            slow = asyncio.create_task(client.post(url, json={"sleep": 1.5, "x": 1}))
            await asyncio.sleep(0.05)
            return list(await asyncio.gather(slow, client.post(url, json={"x": 2})))

    t0 = time.monotonic()
    running, queued = asyncio.run(in_order())
    assert time.monotonic() - t0 < 1.4, "the 504 must not wait for the slow predict"
    assert running.status_code == queued.status_code == 504
    assert "was running" in running.json()["error"]["message"]
    assert "was queued" in queued.json()["error"]["message"]
    time.sleep(1.2)  # the running batch finishes; its late result is discarded
    assert server.metric("servectl_requests_dropped_total", reason="timeout") == 1
    ok = httpx.post(url, json={"x": 3}).json()
    # the queued request's work was never run: only the slow one and this one were predicted
    assert ok["y"] == 9.0 and ok["items_seen"] == 2


def test_overload_gets_503_with_retry_after_at_once(serve) -> None:
    server = serve(toolbox_spec(limits={"max_queue": 4}, batching={"max_batch_size": 1}))
    bodies = [{"sleep": 0.3}] + [{"x": i} for i in range(19)]
    responses = asyncio.run(post_many(server.url + "/predict", bodies))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and statuses.count(503) >= 10 and statuses.count(200) >= 5
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["retry-after"] == "1" and rejected.json()["error"]["type"] == "overloaded"
    assert server.metric("servectl_requests_total", route="/predict", status="503") == statuses.count(503)


def test_oversized_body_is_413_before_it_is_read(serve) -> None:
    server = serve(toolbox_spec(limits={"max_body_mb": 0.001}))
    small = httpx.post(server.url + "/predict", json={"x": 1})
    assert small.status_code == 200

    def huge():  # a streamed body without Content-Length, much larger than the limit
        for _ in range(200):
            yield b"x" * 10_000

    r = httpx.post(server.url + "/predict", content=huge())
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    r = httpx.post(server.url + "/predict", content=b"1" * 5000)
    assert r.status_code == 413


def test_disconnected_clients_work_is_dropped(serve) -> None:
    server = serve(toolbox_spec(batching={"max_batch_size": 1}))
    url = server.url + "/predict"

    async def impatient() -> None:
        async with httpx.AsyncClient(timeout=0.3) as client:
            blocker = asyncio.create_task(client.post(url, json={"sleep": 1.0}))
            await asyncio.sleep(0.1)
            gone = [client.post(url, json={"x": i}) for i in range(30)]
            results = await asyncio.gather(blocker, *gone, return_exceptions=True)
            assert all(isinstance(r, httpx.TimeoutException) for r in results)

    asyncio.run(impatient())
    time.sleep(1.2)
    # every request that reached the server (under a loaded CI box a 0.3 s client may give up
    # before its request is even read) is answered as gone (499) and, but the running blocker,
    # dropped from the queue
    gone = server.metric("servectl_requests_total", route="/predict", status="499")
    dropped = server.metric("servectl_requests_dropped_total", reason="disconnected")
    assert dropped == gone - 1 and dropped >= 1, (dropped, gone)
    after = httpx.post(url, json={"x": 1}).json()
    assert after["items_seen"] == 2  # the blocker and this one: the 30 never reached the worker


@pytest.mark.parametrize("kind", ["fail", "unpicklable", "wrong_length", "unserializable"])
def test_handler_failures_touch_only_their_requests(shared_serve, kind: str) -> None:
    server = shared_serve(toolbox_spec())
    url = server.url + "/predict"
    logged = len(server.log())  # the shared server's log so far
    pid = httpx.post(url, json={"x": 1}).json()["pid"]
    bodies = [{"x": 2, "sleep": 0.05}, {kind: True}, {"x": 3}, {"x": 4}]
    responses = asyncio.run(post_many(url, bodies))
    bad = responses[1]
    assert bad.status_code == 500 and bad.json()["error"]["request_id"] == bad.headers["x-request-id"]
    if kind != "wrong_length":  # a wrong-length batch fails its whole batch (a handler bug)
        assert [r.json()["y"] for i, r in enumerate(responses) if i != 1] == [4.0, 9.0, 16.0]
    assert httpx.post(url, json={"x": 5}).json()["pid"] == pid  # the worker stayed up
    assert "Traceback" in server.log()[logged:]  # the traceback goes to the log, not the client
    assert "Traceback" not in bad.text


def test_a_number_out_of_range_is_the_clients_400_an_overflowing_answer_the_handlers_500(shared_serve) -> None:
    """1e999 is valid JSON that parses as infinity: a 400 naming the field, before the handler
    runs. The toolbox's square of 1e308 (float32) is the handler's own infinity: a 500 that says
    it is a non-finite output, and where."""
    server = shared_serve(toolbox_spec())
    url = server.url + "/predict"
    for body, where in ((b'{"x": 1e999}', "x"), (b'{"x": 2.0, "echo": {"deep": [1, -1E+400]}}', "echo.deep.1")):
        sent = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        assert sent.status_code == 400, sent.text
        error = sent.json()["error"]
        assert error["type"] == "validation_error" and error["message"].startswith(f"invalid {where}: "), error
        assert error["detail"][0]["loc"] == where.split(".") and error["request_id"] == sent.headers["x-request-id"]
    squared = httpx.post(url, json={"x": 1e308})
    assert squared.status_code == 500, squared.text
    error = squared.json()["error"]
    assert error["type"] == "handler_error" and "non-finite output" in error["message"], error
    assert "at y" in error["message"]
    assert httpx.post(url, json={"x": 1e18}).json()["y"] == pytest.approx(1e36, rel=1e-6)  # still finite in float32


def test_killed_worker_answers_everything_and_restarts(serve) -> None:
    server = serve(toolbox_spec(batching={"max_batch_size": 4}))
    url = server.url + "/predict"
    pid = httpx.post(url, json={"x": 1}).json()["pid"]

    async def load_and_kill() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
            tasks = [asyncio.create_task(client.post(url, json={"x": i, "sleep": 0.3})) for i in range(40)]
            deadline = time.monotonic() + 10
            while server.metric("servectl_worker_inflight") == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # wait until the worker holds a batch
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.3)
            down = await client.get(server.url + "/ready")
            assert down.status_code == 503 and down.json()["workers_ready"] == 0
            return await asyncio.gather(*tasks)

    responses = asyncio.run(load_and_kill())
    statuses = [r.status_code for r in responses]
    assert len(statuses) == 40 and set(statuses) <= {200, 503}
    assert 503 in statuses, "requests held by the killed worker are answered 503"
    assert 200 in statuses, "queued requests are served by the restarted worker"
    crashed = next(r for r in responses if r.status_code == 503)
    assert crashed.json()["error"]["type"] == "worker_crashed" and crashed.headers["retry-after"] == "1"
    deadline = time.monotonic() + 30
    while httpx.get(server.url + "/ready").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(server.url + "/ready").status_code == 200
    assert server.metric("servectl_worker_restarts_total") == 1
    assert httpx.get(server.url + "/info").json()["workers"]["restarts"] == 1
    assert httpx.post(url, json={"x": 2}).json()["pid"] != pid


def test_worker_that_keeps_failing_setup_is_given_up(serve, tmp_path: Path) -> None:
    marker = tmp_path / "corrupt"
    server = serve(
        toolbox_spec(supervisor={"max_restarts": 2, "restart_window_s": 60}),
        env={"TOOLBOX_FAIL_SETUP_IF": str(marker)},
    )
    pid = httpx.post(server.url + "/predict", json={"x": 1}).json()["pid"]
    marker.touch()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    body = {}
    while time.monotonic() < deadline:
        r = httpx.get(server.url + "/ready")
        body = r.json()
        if r.status_code == 503 and any("gave up" in p for p in body.get("problems", [])):
            break
        time.sleep(0.1)
    assert any("gave up after 2 restarts" in p and "corrupt" in p for p in body["problems"]), body
    r = httpx.post(server.url + "/predict", json={"x": 1})
    assert r.status_code == 503 and "gave up" in r.json()["error"]["message"]
    assert "gave up after 2 restarts" in server.log()


def test_sigterm_drains_in_flight_then_exits_zero(serve) -> None:
    server = serve(toolbox_spec(batching={"max_batch_size": 2}))
    url = server.url + "/predict"

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            tasks = [asyncio.create_task(client.post(url, json={"x": i, "sleep": 0.3})) for i in range(6)]
            await asyncio.sleep(0.2)
            server.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 6
    assert server.proc.wait(30) == 0
    with pytest.raises(httpx.TransportError):
        httpx.post(url, json={"x": 1})


def test_second_sigterm_exits_at_once(serve) -> None:
    server = serve(toolbox_spec(limits={"drain_s": 60}))
    url = server.url + "/predict"

    async def run() -> float:
        async with httpx.AsyncClient(timeout=30) as client:
            task = asyncio.create_task(client.post(url, json={"sleep": 20}))
            await asyncio.sleep(0.3)
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 10)
            task.cancel()
            return time.monotonic() - t0

    assert asyncio.run(run()) < 5
    assert server.proc.returncode != 0


def test_pipelined_worker_answers_everything_and_a_crash_leaves_nothing_hanging(serve) -> None:
    """batching.pipeline: full batches wait in the busy worker's inbox; every request gets its
    own answer, and when the worker dies with a batch waiting behind the crashing one, both
    are answered (the replacement serves what comes next)."""
    server = serve(toolbox_spec(batching={"max_batch_size": 4, "max_wait_ms": 1, "pipeline": True}))
    url = server.url + "/predict"
    bodies = [{"x": i, "sleep": 0.05} for i in range(24)]
    answers = asyncio.run(post_many(url, bodies))
    assert [a.json()["y"] for a in answers] == [float(i * i) for i in range(24)]
    assert max(a.json()["batch_size"] for a in answers) <= 4
    crash = [{"crash": True, "sleep": 0.2}] + [{"x": i} for i in range(12)]
    answers = asyncio.run(post_many(url, crash))
    assert all(a.status_code in (200, 500, 503) for a in answers), [a.status_code for a in answers]
    assert httpx.post(url, json={"x": 3}, timeout=30).json()["y"] == 9.0  # a new worker serves
