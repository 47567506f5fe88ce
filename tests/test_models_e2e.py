"""Several models in one server, end to end (issue 13): one real `servectl serve` process with
five models (a custom predict handler with keys of its own, a handler whose spec entry a
reload changes, two OpenAI-kind handlers, a V2 ONNX model), driven over real HTTP and by the
official `openai` client.

One server is shared by the whole module, tests in file order: the read-only tests first, then
those that kill a worker, reload one model (under a steady load, with a setup that fails,
from the CLI) and reload every model (SIGHUP). Each leaves the server serving every model,
and counts only the changes it made.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

openai = pytest.importorskip("openai")
ort = pytest.importorskip("onnxruntime")

from support.paths import ROOT, TOOLBOX  # noqa: E402
from support.servers import Server, write_spec  # noqa: E402
from support.specs import toolbox_spec  # noqa: E402

SHARED_KEY, CALC_KEY, ECHO_B_KEY, ADMIN_KEY = "sk-shared", "sk-calc-only", "sk-echo-b-only", "adm-secret"
AUTH = {"Authorization": f"Bearer {SHARED_KEY}"}
NAMES = ["calc", "roll", "echo-a", "echo-b", "tiny-onnx"]
HANDLERS = ROOT / "tests" / "handlers"
ROW = [0.5, -1.0, 2.0, 0.25]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def deployment_spec(onnx_path: Path, roll_weights: str, roll_batch: int = 16) -> dict:
    cpu = {"accelerator": "cpu", "workers_per_device": 1}
    return {
        "server": {"host": "127.0.0.1", "access_log": False},
        "auth": {"api_keys": [SHARED_KEY], "admin_keys": [ADMIN_KEY]},
        "models": [
            {  # a custom predict handler, with a key of its own
                "name": "calc",
                "handler": str(TOOLBOX),
                "devices": cpu,
                "batching": {"max_batch_size": 8, "max_wait_ms": 2},
                "limits": {"timeout_s": 10},
                "auth": {"api_keys": [CALC_KEY]},
            },
            {  # a handler whose "weights" (model.path) a reload changes
                "name": "roll",
                "handler": str(HANDLERS / "models_versioned.py"),
                "model": {"backend": "python", "path": roll_weights},
                "devices": cpu,
                "batching": {"max_batch_size": roll_batch, "max_wait_ms": 2},
                "limits": {"timeout_s": 10, "drain_s": 5},
            },
            {
                "name": "echo-a",
                "handler": str(HANDLERS / "models_llm.py"),
                "api": {"kind": "openai"},
                "devices": cpu,
                "limits": {"timeout_s": 10},
            },
            {  # a second OpenAI-kind model: the shared /v1 routes pick by the body's `model`
                "name": "echo-b",
                "handler": str(HANDLERS / "models_llm.py"),
                "api": {"kind": "openai"},
                "devices": cpu,
                "limits": {"timeout_s": 10},
                "auth": {"api_keys": [ECHO_B_KEY]},
            },
            {
                "name": "tiny-onnx",
                "model": {"backend": "onnx", "path": str(onnx_path)},
                "api": {"kind": "v2"},
                "devices": cpu,
                "batching": {"max_batch_size": 16},
                "limits": {"timeout_s": 10},
            },
        ],
    }


@dataclass
class Deployment:
    server: Server
    folder: Path
    onnx: Path

    @property
    def url(self) -> str:
        return self.server.url

    def weights(self, name: str, **content: Any) -> str:
        """Write a weights file for `roll` (read by its setup); its name, for model.path."""
        (self.folder / name).write_text(json.dumps(content))
        return name

    def rewrite(self, roll_weights: str, roll_batch: int = 16) -> None:
        """Rewrite the spec file the server was started with (a reload re-reads it)."""
        write_spec(self.folder, deployment_spec(self.onnx, roll_weights, roll_batch), "multi.yaml")

    def predict(self, model: str, body: dict | None = None, key: str = SHARED_KEY) -> dict:
        r = httpx.post(f"{self.url}/models/{model}/predict", json=body or {"x": 3}, headers=bearer(key), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def echo_pid(self, model: str) -> int:
        r = httpx.post(self.url + "/v1/embeddings", json={"model": model, "input": "x"}, headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        return int(r.json()["data"][0]["embedding"][1])

    def reload(self, model: str, key: str | None = ADMIN_KEY) -> httpx.Response:
        headers = bearer(key) if key is not None else {}
        return httpx.post(f"{self.url}/admin/models/{model}/reload", headers=headers, timeout=60)

    def restarts(self, model: str, reason: str) -> float:
        return self.server.metric("servectl_worker_restarts_total", model=model, reason=reason)


@pytest.fixture(scope="module")
def multi(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The five-model server; calc's setup takes 1 s (TOOLBOX_SETUP_SLEEP): a window in which
    a crashed calc worker is certainly not ready yet."""
    folder = tmp_path_factory.mktemp("multi")
    deployment = Deployment(None, folder, models / "tiny_net.onnx")  # type: ignore[arg-type]
    deployment.rewrite(deployment.weights("v1.json", version="v1"))
    server = Server(folder / "multi.yaml", env={"TOOLBOX_SETUP_SLEEP": "1"}, log_dir=folder)
    deployment.server = server
    server.headers = AUTH  # /metrics needs a key while keys exist
    try:
        server.wait_ready(90)
        yield deployment
    finally:
        server.stop()


# --- a steady load --------------------------------------------------------------------------


Call = tuple[str, dict, dict[str, str]]  # path, JSON body, headers


async def steady_load(url: str, calls: list[Call], rps: float, stop: asyncio.Event) -> list[tuple[int, Any]]:
    """POST `calls` round-robin at a fixed rate (not waiting for answers) until `stop` is set;
    every answer as (status, JSON body), a transport error as (0, its text)."""
    loop = asyncio.get_running_loop()

    async def one(client: httpx.AsyncClient, path: str, body: dict, headers: dict[str, str]) -> tuple[int, Any]:
        try:
            r = await client.post(path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as client:
        tasks = []
        started = loop.time()
        while not stop.is_set():
            path, body, headers = calls[len(tasks) % len(calls)]
            tasks.append(asyncio.create_task(one(client, path, body, headers)))
            await asyncio.sleep(max(0.0, started + len(tasks) / rps - loop.time()))
        return list(await asyncio.gather(*tasks))


def failures(results: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return [(status, body) for status, body in results if status != 200]


# --- every route, one server ----------------------------------------------------------------


def test_every_models_routes_answer(multi: Deployment) -> None:
    url = multi.url
    calc = multi.predict("calc", {"x": 3})
    assert calc["y"] == 9.0
    assert multi.predict("roll", {"x": 3})["y"] == 6.0

    session = ort.InferenceSession(str(multi.onnx), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": np.array([ROW], dtype=np.float32)})[0][0]
    infer = {"id": "r1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    v2 = httpx.post(url + "/v2/models/tiny-onnx/infer", json=infer, headers=AUTH)
    assert v2.status_code == 200, v2.text
    assert v2.json()["model_name"] == "tiny-onnx" and v2.json()["id"] == "r1"
    np.testing.assert_allclose(v2.json()["outputs"][0]["data"], expected, rtol=1e-5, atol=1e-6)
    onnx_predict = httpx.post(url + "/models/tiny-onnx/predict", json={"inputs": [ROW]}, headers=AUTH)
    assert onnx_predict.status_code == 200, onnx_predict.text
    np.testing.assert_allclose(onnx_predict.json()["outputs"][0], expected, rtol=1e-5, atol=1e-6)
    meta = httpx.get(url + "/v2/models/tiny-onnx", headers=AUTH).json()
    assert meta["name"] == "tiny-onnx" and meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert httpx.get(url + "/v2/models/tiny-onnx/ready", headers=AUTH).json() == {"name": "tiny-onnx", "ready": True}
    assert httpx.get(url + "/v2/health/ready").json() == {"ready": True}  # every model ready
    # the V2 routes are the V2 model's only: the other models are not served there
    assert httpx.post(url + "/v2/models/calc/infer", json=infer, headers=AUTH).status_code == 404
    assert httpx.get(url + "/v2/models/calc", headers=AUTH).status_code == 404
    assert httpx.get(url + "/v2/models/calc/ready", headers=AUTH).status_code == 404

    chat = {"model": "echo-b", "messages": [{"role": "user", "content": "hi there"}]}
    r = httpx.post(url + "/v1/chat/completions", json=chat, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "echo-b" and r.json()["choices"][0]["message"]["content"] == "[echo-b] hi there"
    # the single-model path stays at /predict with one model only: here each has its own
    assert httpx.post(url + "/predict", json={"x": 1}, headers=AUTH).status_code == 404


# --- OpenAI: routed by the body's `model` -----------------------------------------------------


def test_openai_routes_by_model_with_the_official_client(multi: Deployment) -> None:
    client = openai.OpenAI(base_url=multi.url + "/v1", api_key=SHARED_KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["echo-a", "echo-b"]  # the OpenAI-kind models only
    assert client.models.retrieve("echo-b").id == "echo-b"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("calc")

    messages = [{"role": "user", "content": "hello there"}]
    for name in ("echo-a", "echo-b"):
        reply = client.chat.completions.create(model=name, messages=messages)
        assert reply.model == name and reply.choices[0].message.content == f"[{name}] hello there"
        assert reply.usage.completion_tokens == 3
        text = client.completions.create(model=name, prompt="one two three").choices[0].text
        assert text == f"[{name}] one two three"
    stream = client.chat.completions.create(model="echo-b", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "[echo-b] hello there"

    vectors = {name: client.embeddings.create(model=name, input=["abc", "de"]).data for name in ("echo-a", "echo-b")}
    assert [d.embedding[0] for d in vectors["echo-a"]] == [3.0, 2.0]
    assert vectors["echo-a"][0].embedding[1] != vectors["echo-b"][0].embedding[1], "each model has its own worker"

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=messages)
    assert missing.value.body["code"] == "model_not_found"
    assert "gpt-4o" in missing.value.body["message"] and "echo-a, echo-b" in missing.value.body["message"]
    with pytest.raises(openai.NotFoundError):  # a model served, but not on the OpenAI routes
        client.embeddings.create(model="calc", input="x")

    async def many() -> list[tuple[str, str]]:
        aclient = openai.AsyncOpenAI(base_url=multi.url + "/v1", api_key=SHARED_KEY, max_retries=0)
        names = ["echo-a", "echo-b"] * 6
        replies = await asyncio.gather(
            *(
                aclient.chat.completions.create(model=n, messages=[{"role": "user", "content": f"n{i}"}])
                for i, n in enumerate(names)
            )
        )
        return [(r.model, r.choices[0].message.content) for r in replies]

    got = asyncio.run(many())
    assert got == [(n, f"[{n}] n{i}") for i, n in enumerate(["echo-a", "echo-b"] * 6)]


# --- readiness, /info and metrics by model ------------------------------------------------------


def test_readiness_info_and_metrics_per_model(multi: Deployment) -> None:
    url, server = multi.url, multi.server
    ready = httpx.get(url + "/ready")
    assert ready.status_code == 200
    assert ready.json()["models"] == [{"name": n, "ready": True, "workers": 1, "workers_ready": 1} for n in NAMES], (
        ready.json()
    )
    one = httpx.get(url + "/ready", params={"model": "echo-b"})
    assert one.status_code == 200 and [m["name"] for m in one.json()["models"]] == ["echo-b"]
    assert httpx.get(url + "/ready", params={"model": "nope"}).status_code == 404

    info = httpx.get(url + "/info", headers=AUTH).json()
    assert info["ready"] is True and isinstance(info["version"], str)
    assert [m["name"] for m in info["models"]] == NAMES
    paths = {m["name"]: m["api"]["path"] for m in info["models"]}
    assert paths == {n: f"/models/{n}/predict" for n in NAMES}
    assert {m["name"]: m["api"]["kind"] for m in info["models"]}["tiny-onnx"] == "v2"

    def count(model: str, route: str, status: str = "200") -> float:
        return server.metric("servectl_requests_total", model=model, route=route, status=status)

    routes = {
        "calc": "/models/calc/predict",
        "echo-a": "/v1/chat/completions",
        "echo-b": "/v1/chat/completions",
        "tiny-onnx": "/v2/models/tiny-onnx/infer",
    }
    before = {m: count(m, r) for m, r in routes.items()}
    missing_before = count("", "/v1/chat/completions", "404")
    for _ in range(2):
        multi.predict("calc")
    for _ in range(3):
        body = {"model": "echo-a", "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH).status_code == 200
    body = {"model": "echo-b", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH).status_code == 200
    infer = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    assert httpx.post(url + "/v2/models/tiny-onnx/infer", json=infer, headers=AUTH).status_code == 200
    body = {"model": "nope", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH).status_code == 404
    after = {m: count(m, r) for m, r in routes.items()}
    assert {m: after[m] - before[m] for m in routes} == {"calc": 2, "echo-a": 3, "echo-b": 1, "tiny-onnx": 1}
    assert count("", "/v1/chat/completions", "404") - missing_before == 1, "no model answered: no model label"

    for name in NAMES:
        assert server.metric("servectl_workers_ready", model=name) == 1, name
    assert server.metric("servectl_batch_size_count", model="calc") >= 2
    text = httpx.get(url + "/metrics", headers=AUTH).text
    samples = [line for line in text.splitlines() if line.startswith("servectl_")]
    assert samples and all('model="' in line for line in samples), [s for s in samples if 'model="' not in s]
    for name in NAMES:
        assert f'servectl_worker_inflight{{model="{name}",worker=' in text, name
        for reason in ("crashed", "hung", "retry", "reload"):
            assert f'servectl_worker_restarts_total{{model="{name}",reason="{reason}"}}' in text, (name, reason)


# --- keys -----------------------------------------------------------------------------------------


def test_a_models_own_key_opens_its_routes_only(multi: Deployment) -> None:
    url = multi.url

    def post(path: str, body: dict, key: str | None) -> int:
        return httpx.post(url + path, json=body, headers=bearer(key) if key else {}).status_code

    assert post("/models/calc/predict", {"x": 2}, CALC_KEY) == 200
    assert post("/models/calc/predict", {"x": 2}, SHARED_KEY) == 200
    assert post("/models/calc/predict", {"x": 2}, None) == 401
    assert post("/models/calc/predict", {"x": 2}, ECHO_B_KEY) == 401  # another model's own key
    # calc's key on the other models' routes
    assert post("/models/roll/predict", {"x": 2}, CALC_KEY) == 401
    infer = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    assert post("/v2/models/tiny-onnx/infer", infer, CALC_KEY) == 401
    assert post("/v1/chat/completions", {"model": "echo-a", "messages": []}, CALC_KEY) == 401
    assert httpx.get(url + "/v1/models", headers=bearer(CALC_KEY)).status_code == 401
    assert httpx.get(url + "/v2/models/tiny-onnx", headers=bearer(CALC_KEY)).status_code == 401

    # a shared OpenAI route: the key is checked for the model the body names
    own = openai.OpenAI(base_url=url + "/v1", api_key=ECHO_B_KEY, max_retries=0)
    messages = [{"role": "user", "content": "mine"}]
    assert own.chat.completions.create(model="echo-b", messages=messages).choices[0].message.content == "[echo-b] mine"
    with pytest.raises(openai.AuthenticationError):
        own.chat.completions.create(model="echo-a", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key=CALC_KEY, max_retries=0).chat.completions.create(
            model="echo-b", messages=messages
        )
    assert post("/models/echo-b/predict", {"x": 1}, ECHO_B_KEY) == 200  # its predict route too


def test_reload_needs_an_admin_key(multi: Deployment, shared_serve) -> None:
    # admin routes are off while auth.admin_keys is unset, whatever the key
    plain = shared_serve(toolbox_spec())
    for headers in ({}, bearer("anything")):
        r = httpx.post(plain.url + "/admin/models/toolbox/reload", headers=headers)
        assert r.status_code == 403, r.text
        assert "admin_keys" in r.json()["error"]["message"]

    before = multi.restarts("roll", "reload")
    assert multi.reload("roll", key=None).status_code == 401
    assert multi.reload("roll", key="wrong").status_code == 401
    assert multi.reload("roll", key=SHARED_KEY).status_code == 401, "API keys never open admin routes"
    assert multi.reload("roll", key=CALC_KEY).status_code == 401
    missing = multi.reload("nope")
    assert missing.status_code == 404 and "nope" in missing.text
    # and an admin key opens nothing else
    r = httpx.post(multi.url + "/models/roll/predict", json={"x": 1}, headers=bearer(ADMIN_KEY))
    assert r.status_code == 401
    assert multi.restarts("roll", "reload") == before, "no refused call reloaded anything"


# --- isolation: a worker of one model killed ----------------------------------------------------


def test_a_killed_worker_does_not_disturb_the_other_models(multi: Deployment) -> None:
    url = multi.url
    pid = multi.predict("calc")["pid"]
    crashed = multi.restarts("calc", "crashed")
    others = {n: multi.restarts(n, "crashed") for n in NAMES if n != "calc"}
    calls: list[Call] = [
        ("/models/roll/predict", {"x": 1}, AUTH),
        ("/v1/chat/completions", {"model": "echo-a", "messages": [{"role": "user", "content": "busy"}]}, AUTH),
        (
            "/v2/models/tiny-onnx/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]},
            AUTH,
        ),
    ]

    async def run() -> tuple[list[tuple[int, Any]], dict[str, Any]]:
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(url, calls, 40, stop))
        seen: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await asyncio.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while (await client.get("/ready", params={"model": "calc"})).status_code == 200:
                assert time.monotonic() < deadline, "calc never stopped being ready after its worker was killed"
                await asyncio.sleep(0.02)
            # calc's new worker is in its setup (1 s) now
            whole = await client.get("/ready")
            seen["ready"] = (whole.status_code, whole.json())
            seen["each"] = {n: (await client.get("/ready", params={"model": n})).status_code for n in NAMES}
            seen["v2"] = (await client.get("/v2/models/tiny-onnx/ready", headers=AUTH)).status_code
            deadline = time.monotonic() + 30
            while (await client.get("/ready", params={"model": "calc"})).status_code != 200:
                assert time.monotonic() < deadline, "calc's worker was not replaced"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # and a little more load with calc back
        stop.set()
        return await load, seen

    results, seen = asyncio.run(run())
    assert len(results) >= 40
    assert failures(results) == [], f"{len(failures(results))} of {len(results)} failed: {failures(results)[:5]}"
    status, body = seen["ready"]
    assert status == 503
    assert {m["name"]: m["ready"] for m in body["models"]} == {n: n != "calc" for n in NAMES}
    assert any(p.startswith("calc: ") for p in body.get("problems", [])), body
    assert seen["each"] == {n: 503 if n == "calc" else 200 for n in NAMES}
    assert seen["v2"] == 200

    assert multi.restarts("calc", "crashed") - crashed == 1
    assert {n: multi.restarts(n, "crashed") for n in others} == others, "the other models' workers were untouched"
    assert multi.predict("calc")["pid"] != pid
    assert httpx.get(url + "/ready").status_code == 200


# --- reload -------------------------------------------------------------------------------------


def test_reload_under_steady_load_fails_no_request(multi: Deployment) -> None:
    url = multi.url
    old = multi.predict("roll")
    reloads = {n: multi.restarts(n, "reload") for n in NAMES}
    # the new weights take 1 s to load: the old worker serves meanwhile
    multi.rewrite(multi.weights("v2.json", version="v2", setup_s=1.0), roll_batch=8)
    calls: list[Call] = [("/models/roll/predict", {"x": 1, "sleep": 0.005}, AUTH)]
    rps = 60

    async def run() -> tuple[list[tuple[int, Any]], httpx.Response, list[int], float]:
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(url, calls, rps, stop))
        probes: list[int] = []
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            reload = asyncio.create_task(client.post("/admin/models/roll/reload", headers=bearer(ADMIN_KEY)))
            while not reload.done():
                probes.append((await client.get("/ready", params={"model": "roll"})).status_code)
                await asyncio.sleep(0.1)
            answer = await reload
            took = time.monotonic() - t0
            await asyncio.sleep(0.5)  # the old worker finishes what it holds and stops
        stop.set()
        return await load, answer, probes, took

    results, answer, probes, took = asyncio.run(run())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "roll" and body["reloaded"] is True and body["workers"] == 1 and body["seconds"] > 0
    assert len(results) >= 50 and len(results) >= rps * took, "a load of at least 50 requests/s for the reload"
    assert failures(results) == [], f"{len(failures(results))} of {len(results)} failed: {failures(results)[:5]}"
    assert probes and set(probes) == {200}, f"/ready?model=roll during the reload: {probes}"
    versions = [b["version"] for _, b in results]
    pids = {b["pid"] for _, b in results}
    assert "v1" in versions and versions[-1] == "v2", "answers moved from the old version to the new one"
    assert results[-1][1]["pid"] != old["pid"] and pids == {old["pid"], results[-1][1]["pid"]}
    new = multi.predict("roll")
    assert new["version"] == "v2" and new["pid"] != old["pid"], "new workers serve after the reload"
    assert {n: multi.restarts(n, "reload") - reloads[n] for n in NAMES} == {n: int(n == "roll") for n in NAMES}
    info = {m["name"]: m for m in httpx.get(url + "/info", headers=AUTH).json()["models"]}
    assert info["roll"]["reloads"] >= 1 and info["roll"]["batching"]["max_batch_size"] == 8
    assert info["calc"]["reloads"] == 0


def test_reload_whose_setup_fails_keeps_the_old_workers(multi: Deployment) -> None:
    url = multi.url
    multi.rewrite(multi.weights("v4.json", version="v4"))
    assert multi.reload("roll").status_code == 200
    old = multi.predict("roll")
    assert old["version"] == "v4"
    reloads = multi.restarts("roll", "reload")
    try:
        multi.rewrite(multi.weights("corrupt.json", version="v5", corrupt=True))
        r = multi.reload("roll")
        assert r.status_code == 500, r.text
        error = r.json()["error"]
        assert error["type"] == "reload_failed" and "corrupt" in error["message"], error
        now = multi.predict("roll")
        assert (now["version"], now["pid"]) == ("v4", old["pid"]), "the old worker keeps serving"
        assert httpx.get(url + "/ready").status_code == 200
        assert multi.restarts("roll", "reload") == reloads

        multi.rewrite("missing.json")  # weights that are not there: setup fails as well
        assert multi.reload("roll").status_code == 500
        assert multi.predict("roll")["pid"] == old["pid"]

        spec = multi.folder / "multi.yaml"
        spec.write_text(spec.read_text().replace("max_batch_size: 16", "max_batch_size: 0", 1))
        invalid = multi.reload("roll")
        assert invalid.status_code == 422, invalid.text
        assert invalid.json()["error"]["type"] == "invalid_spec"
        assert "max_batch_size" in invalid.text
        assert multi.predict("roll")["pid"] == old["pid"]

        spec.write_text(spec.read_text().replace("max_batch_size: 0", "max_batch_size: 16", 1))
        moved = yaml.safe_load(spec.read_text())
        next(m for m in moved["models"] if m["name"] == "roll")["api"] = {"path": "/roll"}
        spec.write_text(yaml.safe_dump(moved, sort_keys=False))
        refused = httpx.post(
            f"{url}/admin/models/roll/reload", headers={**bearer(ADMIN_KEY), "X-Request-Id": "rid-42"}, timeout=60
        )
        assert refused.status_code == 409 and refused.json()["error"]["type"] == "reload_refused", refused.text
        assert "api" in refused.json()["error"]["message"] and refused.json()["error"]["request_id"] == "rid-42"
        assert multi.predict("roll")["pid"] == old["pid"]
    finally:
        multi.rewrite("v4.json")
    info = {m["name"]: m for m in httpx.get(url + "/info", headers=AUTH).json()["models"]}
    assert info["roll"]["ready"] and info["roll"]["workers"]["ready"] == 1
    assert "reload of model roll failed" in multi.server.log()


def test_reload_from_the_cli(multi: Deployment) -> None:
    old = multi.predict("roll")
    multi.rewrite(multi.weights("v6.json", version="v6"))
    env = {k: v for k, v in os.environ.items() if k != "SERVECTL_ADMIN_KEY"}
    command = [sys.executable, "-m", "servectl", "reload", multi.url, "roll", "--admin-key", ADMIN_KEY]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reloaded roll: 1 worker(s)" in done.stdout + done.stderr, done.stdout + done.stderr
    new = multi.predict("roll")
    assert new["version"] == "v6" and new["pid"] != old["pid"]

    wrong = subprocess.run([*command[:-1], "wrong"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert wrong.returncode == 1 and "reload failed (401)" in wrong.stdout + wrong.stderr, wrong.stdout + wrong.stderr
    assert multi.predict("roll")["pid"] == new["pid"]


def test_sighup_reloads_every_model(multi: Deployment) -> None:
    url = multi.url
    pids = {"calc": multi.predict("calc")["pid"], "roll": multi.predict("roll")["pid"]}
    pids |= {n: multi.echo_pid(n) for n in ("echo-a", "echo-b")}
    reloads = {n: multi.restarts(n, "reload") for n in NAMES}
    calls: list[Call] = [
        ("/models/roll/predict", {"x": 1}, AUTH),
        ("/models/calc/predict", {"x": 1}, bearer(CALC_KEY)),
        ("/v1/chat/completions", {"model": "echo-b", "messages": [{"role": "user", "content": "hup"}]}, AUTH),
        (
            "/v2/models/tiny-onnx/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]},
            AUTH,
        ),
    ]

    def all_reloaded() -> bool:
        return all(multi.restarts(n, "reload") > reloads[n] for n in NAMES)

    async def run() -> list[tuple[int, Any]]:
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(url, calls, 30, stop))
        await asyncio.sleep(0.3)
        multi.server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 40
        while not await asyncio.to_thread(all_reloaded):
            assert time.monotonic() < deadline, "SIGHUP did not reload every model"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        stop.set()
        return await load

    results = asyncio.run(run())
    assert multi.server.proc.poll() is None, "the server keeps running after SIGHUP"
    assert failures(results) == [], f"{len(failures(results))} of {len(results)} failed: {failures(results)[:5]}"
    assert {n: multi.restarts(n, "reload") - reloads[n] for n in NAMES} == {n: 1 for n in NAMES}
    now = {"calc": multi.predict("calc")["pid"], "roll": multi.predict("roll")["pid"]}
    now |= {n: multi.echo_pid(n) for n in ("echo-a", "echo-b")}
    assert all(now[n] != pids[n] for n in pids), (pids, now)
    assert httpx.get(url + "/ready").status_code == 200
    assert httpx.get(url + "/health").status_code == 200
    assert "SIGHUP: reloading every model" in multi.server.log()
