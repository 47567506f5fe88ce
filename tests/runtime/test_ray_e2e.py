"""`runtime.kind: ray`: the same spec served on a local Ray Serve, behind servectl's front end.

Ray probes a public address to learn its IP and binds every interface, so these tests run
only inside a network namespace that has nothing but loopback: outside one, the module's
single test re-runs this file under `unshare -n` (root) and passes when it passes; where
that cannot be done, it skips with the reason.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from support.early import NamespacedRun
from support.servers import Server, write_spec
from support.specs import echo_llm_spec, streamer_spec, toolbox_spec

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (the `ray` extra)")
INSIDE = os.environ.get("SERVECTL_RAY_NETNS") == "1"
KEY = "ray-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.mark.skipif(INSIDE, reason="inside the loopback-only namespace already")
def test_ray_runtime_in_a_loopback_only_namespace(ray_run: NamespacedRun) -> None:
    """This file's tests, run by pytest inside the namespace (started with the session)."""
    if ray_run.reason is not None:
        pytest.skip(ray_run.reason)
    code, output = ray_run.result()
    assert code == 0, output[-8000:]
    last = output.strip().splitlines()[-1]
    assert "2 passed" in last and "failed" not in last, output[-2000:]  # the tests below, inside


inside = pytest.mark.skipif(not INSIDE, reason="runs inside the loopback-only namespace (see the test above)")


@pytest.fixture(scope="module")
def ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Ray deployment of four models for the module (Ray and its replicas take seconds)."""
    entries = [
        toolbox_spec(batching={"max_batch_size": 16, "max_wait_ms": 5}, limits={"timeout_s": 2}),
        {**streamer_spec(), "name": "stream"},
        {**echo_llm_spec(), "name": "chat-a"},
        {**echo_llm_spec(), "name": "chat-b"},
    ]
    spec = {
        "runtime": {"kind": "ray", "num_cpus": 2},
        "server": {"access_log": False},
        "auth": {"api_keys": [KEY], "admin_keys": ["adm"]},
        "models": [{k: v for k, v in m.items() if k != "server"} for m in entries],
    }
    server = Server(write_spec(tmp_path_factory.mktemp("ray"), spec), None, [])
    server.headers = AUTH
    try:
        server.wait_ready(240)
        yield server
    finally:
        server.stop()


@inside
def test_the_same_answers_batches_auth_504_and_a_killed_replica(serve, ray: Server) -> None:
    local = serve(toolbox_spec(auth={"api_keys": [KEY]}, server={"access_log": False}))
    auth = AUTH
    url = ray.url + "/models/toolbox/predict"
    info = {m["name"]: m for m in httpx.get(ray.url + "/info", headers=auth).json()["models"]}
    assert info["toolbox"]["runtime"] == "ray" and info["toolbox"]["ready"], info

    # the same predictions as the local runtime
    for x in (0.0, 1.5, -3.25, 1e10):
        mine = httpx.post(url, json={"x": x}, headers=auth).json()
        theirs = httpx.post(local.url + "/predict", json={"x": x}, headers=auth).json()
        assert mine["y"] == theirs["y"], (x, mine, theirs)
    failed = httpx.post(url, json={"fail": True}, headers=auth)
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "handler_error"
    invalid = httpx.post(url, json={"x": "nope"}, headers=auth)
    assert invalid.status_code == 422

    # batches form under concurrency
    async def burst(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=auth, timeout=30) as client:
            return await asyncio.gather(*(client.post(url, json={"x": i, "sleep": 0.02}) for i in range(n)))

    before = ray.metric("servectl_batch_size_count")
    answers = asyncio.run(burst(64))
    assert {r.status_code for r in answers} == {200}
    assert all(r.json()["y"] == float(i) ** 2 for i, r in enumerate(answers))
    batches = ray.metric("servectl_batch_size_count") - before
    assert batches < 64 and max(r.json()["batch_size"] for r in answers) > 1, batches

    # auth and the deadline, as locally
    assert httpx.post(url, json={"x": 1}).status_code == 401
    late = httpx.post(url, json={"sleep": 3}, headers=auth, timeout=30)
    assert late.status_code == 504 and late.json()["error"]["type"] == "timeout"

    # a replica killed with SIGKILL: its requests fail with 503, Ray Serve replaces it
    pid = httpx.post(url, json={"x": 1}, headers=auth).json()["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline, new_pid, statuses = time.monotonic() + 120, None, []
    while time.monotonic() < deadline:
        r = httpx.post(url, json={"x": 2}, headers=auth, timeout=30)
        statuses.append(r.status_code)
        if r.status_code == 200 and r.json()["pid"] != pid:
            new_pid = r.json()["pid"]
            break
        time.sleep(0.5)
    assert new_pid is not None, f"no new replica answered: {statuses[-10:]}\n{ray.log()[-3000:]}"
    assert set(statuses) <= {200, 503, 504}, statuses  # a call to the dead replica: 503, or its deadline
    later = asyncio.run(burst(16))
    assert {r.status_code for r in later} == {200}


@inside
def test_streams_openai_routing_and_a_reload_on_ray(ray: Server) -> None:
    server = ray
    with httpx.stream("POST", server.url + "/models/stream/predict", json={"n": 3}, headers=AUTH) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        tokens = [line for line in r.iter_lines() if line]
    assert len(tokens) == 3 and '"token":2' in tokens[-1], tokens
    for name in ("chat-a", "chat-b"):
        body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(server.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)
        assert answer.status_code == 200 and answer.json()["model"] == name, answer.text
        with httpx.stream(
            "POST", server.url + "/v1/chat/completions", json={**body, "stream": True}, headers=AUTH
        ) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) > 2, events
    unknown = httpx.post(server.url + "/v1/chat/completions", json={"model": "nope", "messages": []}, headers=AUTH)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    reloaded = httpx.post(
        server.url + "/admin/models/chat-a/reload", headers={"Authorization": "Bearer adm"}, timeout=180
    )
    assert reloaded.status_code == 200 and reloaded.json()["reloaded"], reloaded.text
    body = {"model": "chat-a", "messages": [{"role": "user", "content": "x"}]}
    again = httpx.post(server.url + "/v1/chat/completions", json=body, headers=AUTH)
    assert again.status_code == 200
