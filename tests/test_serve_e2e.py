"""End to end: `servectl serve` as a subprocess, real workers, httpx clients."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.early import VALIDATE_ALL, ExampleServers
from support.openapi import resolved
from support.paths import ROOT
from support.specs import toolbox_spec


def test_quickstart_serves_predict_info_docs(shared_serve) -> None:
    server = shared_serve({"handler": "servectl.examples.square", "devices": {"accelerator": "cpu"}})
    r = httpx.post(server.url + "/predict", json={"x": 3})
    assert r.status_code == 200 and r.json() == {"y": 9.0}
    assert len(r.headers["x-request-id"]) >= 8
    info = httpx.get(server.url + "/info").json()
    assert info["handler"] == "servectl.examples.square"
    assert info["workers"] == {"total": 1, "ready": 1, "restarts": 0}
    assert info["batching"]["max_batch_size"] == 16
    schema = httpx.get(server.url + "/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert resolved(schema, body["schema"])["properties"]["x"]["type"] == "number"
    assert body["example"] == {"x": 4.0}
    ok = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    assert resolved(schema, ok["schema"])["properties"]["y"]["type"] == "number"
    assert httpx.get(server.url + "/docs").status_code == 200
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


def test_serve_without_spec_uses_builtin_default(tmp_path: Path) -> None:
    from support.servers import free_port

    port = free_port()
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servectl", "serve", f"server.port={port}"], stdout=out, stderr=out, cwd=ROOT
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"x": 1.5})
        assert r.json() == {"y": 2.25}
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    text = log.read_text()
    assert "built-in default" in text and "quickstart" in text and "max_batch_size=32" in text


def test_batches_form_under_concurrency_and_torch_stays_out_of_api_process(serve) -> None:
    handler = ROOT / "tests" / "handlers" / "torch_toolbox.py"  # toolbox, with torch imported at the top
    server = serve(toolbox_spec(handler=str(handler), batching={"max_batch_size": 16, "max_wait_ms": 5}))

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict", json={"x": i, "sleep": 0.02}) for i in range(64)))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 64
    assert [r.json()["y"] for r in responses] == [float(i * i) for i in range(64)]
    sizes = [r.json()["batch_size"] for r in responses]
    assert max(sizes) > 1 and max(sizes) <= 16
    assert all(r.json()["torch_in_worker"] for r in responses)
    stats = httpx.get(server.url + "/info").json()["stats"]
    assert stats["items"] >= 64 and stats["batches"] < stats["items"]
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "torch" not in maps, "the API process loaded torch"


def test_error_statuses(serve) -> None:
    server = serve(toolbox_spec(limits={"timeout_s": 1, "max_body_mb": 0.01}))
    url = server.url + "/predict"
    bad_json = httpx.post(url, content=b'{"x": ')
    assert bad_json.status_code == 400 and "malformed JSON" in bad_json.json()["error"]["message"]
    invalid = httpx.post(url, json={"x": "not a number"})
    assert invalid.status_code == 422
    assert invalid.json()["error"]["detail"][0]["loc"] == ["x"]
    failed = httpx.post(url, json={"fail": True}, headers={"X-Request-Id": "abc-123"})
    assert failed.status_code == 500
    assert failed.json()["error"]["request_id"] == "abc-123" == failed.headers["x-request-id"]
    assert "boom" in failed.json()["error"]["message"]
    big = httpx.post(url, content=b'{"x": 1, "pad": "' + b"a" * 20_000 + b'"}')
    assert big.status_code == 413
    slow = httpx.post(url, json={"sleep": 2})
    assert slow.status_code == 504 and slow.json()["error"]["type"] == "timeout"
    assert httpx.post(url, json={"x": 5}).json()["y"] == 25.0  # still serving


def test_ready_only_after_setup(serve) -> None:
    server = serve(toolbox_spec(), env={"TOOLBOX_SETUP_SLEEP": "1.5"}, ready=False)
    server.wait_live()
    early = httpx.get(server.url + "/ready")
    assert early.status_code == 503 and early.json()["ready"] is False
    server.wait_ready()
    assert httpx.get(server.url + "/ready").json() == {"ready": True, "workers": 1, "workers_ready": 1}


def test_setup_failure_exits_nonzero_with_the_error(serve) -> None:
    server = serve(toolbox_spec(), env={"TOOLBOX_FAIL_SETUP": "1"}, ready=False)
    assert server.proc.wait(60) == 1
    log = server.log()
    assert "model weights are corrupt" in log
    assert "Traceback" not in log


def test_auth_in_plain_form(serve) -> None:
    server = serve(toolbox_spec(auth={"api_keys": "k1, k2"}))
    url = server.url + "/predict"
    assert httpx.post(url, json={"x": 1}).status_code == 401
    assert httpx.post(url, json={"x": 1}, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.post(url, json={"x": 1}, headers={"Authorization": "Bearer k2"}).status_code == 200
    assert httpx.post(url, json={"x": 1}, headers={"X-API-Key": "k1"}).status_code == 200
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/ready").status_code == 200


def test_every_example_config_validates_and_serves(example_servers: ExampleServers) -> None:
    import yaml

    configs = example_servers.configs()
    assert len(configs) >= 10
    # `servectl validate`'s checks, all specs in one fresh process (started with the servers)
    validate = example_servers.validation(VALIDATE_ALL)
    servers = example_servers.start_all()  # those other tests started are still serving: shared
    try:
        for config in configs:
            spec = yaml.safe_load(config.read_text())
            server = servers[config.stem]
            if spec.get("api", {}).get("kind") == "openai":
                assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == spec["name"]
                continue
            path = spec.get("api", {}).get("path", "/predict")
            schema = httpx.get(server.url + "/openapi.json").json()
            example = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
            r = httpx.post(server.url + path, json=example)
            assert r.status_code == 200, f"{config.name}: {r.text}"
    finally:
        codes = example_servers.stop_all()
    assert codes == dict.fromkeys(servers, 0), [servers[name].log() for name, code in codes.items() if code]
    output, _ = validate.communicate(timeout=120)
    assert validate.returncode == 0 and output.count(" ok\n") == len(configs), output
