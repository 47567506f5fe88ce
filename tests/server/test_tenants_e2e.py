"""Tenants who cannot see each other (issue 28, item 6), against real servers with the keys of
two tenants: while any key exists anywhere in the spec, every route but the probes needs one;
a key sees its own usage on /stats (an admin key every key's), a model's own key the shared
routes scoped to its models; key names reach /metrics only when the spec asks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.paths import ROOT
from support.specs import toolbox_spec

KEY_A, KEY_B, ADMIN = "sk-tenant-a", "sk-tenant-b", "sk-admin"
ROW = [0.5, -1.0, 2.0, 0.25]
SHARED = {"/stats", "/info", "/metrics", "/openapi.json", "/docs", "/redoc"}
PROBES = {"/health", "/ready", "/ready?model=tensor-b", "/v2/health/live", "/v2/health/ready"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX model `x` -> `y` (Identity, FP32 [batch, 4]): no torch needed."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path_factory.mktemp("tenants") / "identity.onnx"
    onnx.save(model, str(path))
    return path


def per_model_keys_spec(onnx_path: Path) -> dict:
    """Two tenants, each with a model of its own and only that model's key: no shared keys,
    no admin keys."""
    cpu = {"accelerator": "cpu", "workers_per_device": 1}
    return {
        "server": {"host": "127.0.0.1", "access_log": False},
        "models": [
            {
                "name": "chat-a",
                "handler": str(ROOT / "handlers" / "echo_llm.py"),
                "model": {"backend": "python"},
                "api": {"kind": "openai"},
                "devices": cpu,
                "auth": {"api_keys": [KEY_A]},
            },
            {
                "name": "tensor-b",
                "model": {"backend": "onnx", "path": str(onnx_path)},
                "api": {"kind": "v2"},
                "devices": cpu,
                "auth": {"api_keys": [KEY_B]},
            },
        ],
    }


def named_keys_spec(**auth: object) -> dict:
    """One model, two tenants' named keys and an admin key."""
    keys = [{"key": KEY_A, "name": "team-a"}, {"key": KEY_B, "name": "team-b"}]
    return toolbox_spec(auth={"keys": keys, "admin_keys": [ADMIN], **auth}, server={"access_log": False})


def test_per_model_keys_alone_protect_every_shared_route_and_scope_what_each_tenant_sees(serve, identity: Path) -> None:
    server = serve(per_model_keys_spec(identity))
    url = server.url
    chat = {"model": "chat-a", "messages": [{"role": "user", "content": "hello there"}]}
    infer = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}

    # no key: the probes answer, nothing else does
    for path in sorted(PROBES):
        assert httpx.get(url + path).status_code == 200, path
    for path in sorted(SHARED | {"/v1/models", "/v1/models/chat-a", "/v2", "/v2/models/tensor-b"}):
        r = httpx.get(url + path)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
        assert r.headers["www-authenticate"].startswith("Bearer"), path
    assert httpx.get(url + "/v2/models/tensor-b/stats").status_code == 401
    assert httpx.post(url + "/v1/chat/completions", json=chat).status_code == 401
    assert httpx.post(url + "/v2/models/tensor-b/infer", json=infer).status_code == 401

    # each tenant uses its model
    answer = httpx.post(url + "/v1/chat/completions", json=chat, headers=bearer(KEY_A), timeout=30)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "You said: hello there"
    for _ in range(2):
        r = httpx.post(url + "/v2/models/tensor-b/infer", json=infer, headers=bearer(KEY_B), timeout=30)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ROW, r.text
    assert httpx.post(url + "/v2/models/tensor-b/infer", json=infer, headers=bearer(KEY_A)).status_code == 401

    # tenant A: its model only, wherever the shared routes list models
    a = bearer(KEY_A)
    assert [m["id"] for m in httpx.get(url + "/v1/models", headers=a).json()["data"]] == ["chat-a"]
    assert httpx.get(url + "/v1/models/chat-a", headers=a).status_code == 200
    assert [m["name"] for m in httpx.get(url + "/info", headers=a).json()["models"]] == ["chat-a"]
    for path in ("/v2", "/v2/models/tensor-b", "/v2/models/tensor-b/stats"):  # B's protocol, B's model
        assert httpx.get(url + path, headers=a).status_code == 401, path
    stats = httpx.get(url + "/stats", headers=a)
    assert stats.status_code == 200
    assert list(stats.json()["models"]) == ["chat-a"] and list(stats.json()["keys"]) == ["chat-a.api_keys.0"]
    assert stats.json()["keys"]["chat-a.api_keys.0"]["by_status"] == {"200": 1}  # counted on the shared route
    assert "tensor-b" not in stats.text
    assert stats.json()["overall"]["requests"] == stats.json()["models"]["chat-a"]["requests"]  # its models only
    metrics = httpx.get(url + "/metrics", headers=a).text
    assert 'model="chat-a"' in metrics and 'model="tensor-b"' not in metrics
    assert 'key="' not in metrics  # key names are no label by default

    # tenant B: the same, the other way round
    b = bearer(KEY_B)
    assert httpx.get(url + "/v1/models", headers=b).status_code == 401  # it opens no OpenAI model
    assert httpx.get(url + "/v2", headers=b).json()["name"] == "servectl"
    assert httpx.get(url + "/v2/models/tensor-b", headers=b).json()["name"] == "tensor-b"
    assert httpx.get(url + "/v2/models/chat-a", headers=b).status_code == 404
    stats = httpx.get(url + "/stats", headers=b)
    assert list(stats.json()["models"]) == ["tensor-b"] and list(stats.json()["keys"]) == ["tensor-b.api_keys.0"]
    assert stats.json()["keys"]["tensor-b.api_keys.0"]["by_status"] == {"200": 2}
    assert "chat-a" not in stats.text
    assert httpx.get(url + "/openapi.json", headers=b).status_code == 200


def test_a_named_key_sees_its_own_usage_and_an_admin_key_every_keys(serve) -> None:
    server = serve(named_keys_spec())
    url = server.url
    for key, xs in ((KEY_A, (1, 2, 3)), (KEY_B, (4,))):
        for x in xs:
            assert httpx.post(url + "/predict", json={"x": x}, headers=bearer(key)).status_code == 200
    assert httpx.post(url + "/predict", json={"x": 1}).status_code == 401

    for path in sorted(SHARED):
        assert httpx.get(url + path).status_code == 401, path
    assert httpx.get(url + "/health").status_code == httpx.get(url + "/ready").status_code == 200

    mine = httpx.get(url + "/stats", headers=bearer(KEY_A))
    assert mine.status_code == 200 and "team-b" not in mine.text
    assert mine.json()["keys"] == {
        "team-a": {"requests": 3, "by_status": {"200": 3}, "prompt_tokens": 0, "completion_tokens": 0}
    }
    theirs = httpx.get(url + "/stats", headers=bearer(KEY_B)).json()["keys"]
    assert list(theirs) == ["team-b"] and theirs["team-b"]["requests"] == 1
    every = httpx.get(url + "/stats", headers=bearer(ADMIN)).json()
    assert {n: k["requests"] for n, k in every["keys"].items()} == {"anonymous": 1, "team-a": 3, "team-b": 1}
    assert every["models"]["toolbox"]["by_status"] == {"200": 4, "401": 1}
    assert httpx.get(url + "/info", headers=bearer(ADMIN)).json()["models"][0]["name"] == "toolbox"
    assert httpx.post(url + "/predict", json={"x": 1}, headers=bearer(ADMIN)).status_code == 401  # no model route

    # `servectl stats` shows the same: a tenant's own row, the admin every row
    def shown(key: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "servectl", "stats", url, "--api-key", key],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "250"},
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert "team-a" in shown(KEY_A) and "team-b" not in shown(KEY_A)
    assert "team-a" in shown(ADMIN) and "team-b" in shown(ADMIN)

    metrics = httpx.get(url + "/metrics", headers=bearer(ADMIN)).text
    assert 'model="toolbox"' in metrics
    assert 'key="' not in metrics and "team-a" not in metrics and "team-b" not in metrics


def test_key_names_reach_metrics_only_when_the_spec_asks(serve) -> None:
    server = serve(named_keys_spec(key_name_metrics=True))
    url = server.url
    for key, n in ((KEY_A, 2), (KEY_B, 1)):
        for _ in range(n):
            assert httpx.post(url + "/predict", json={"x": 2}, headers=bearer(key)).status_code == 200
    server.headers = bearer(ADMIN)
    assert server.metric("servectl_key_requests_total", model="toolbox", key="team-a", status="200") == 2
    assert server.metric("servectl_key_requests_total", model="toolbox", key="team-b", status="200") == 1
    own = httpx.get(url + "/metrics", headers=bearer(KEY_A)).text  # a tenant: its own key's samples only
    assert 'key="team-a"' in own and "team-b" not in own
    assert httpx.get(url + "/metrics").status_code == 401
