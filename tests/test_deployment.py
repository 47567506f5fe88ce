"""A deployment of several models, in-process: device plans per model, routes, OpenAPI."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from servectl.processes.deployment import Deployment, DevicePlanner, ReloadError
from servectl.server.auth import APIKeyAuth
from servectl.server.by_model import ByModel
from servectl.server.endpoint import ModelEndpoint
from servectl.server.router import RouteClash, build_endpoints
from servectl.spec import load_deployment

ROOT = Path(__file__).resolve().parents[1]
SPEC = """
server: {port: 8000}
auth: {api_keys: [shared]}
models:
  - name: embed-a
    model: {backend: python}
    handler: %(echo)s
    api: {kind: openai}
    devices: {accelerator: cuda, ids: [1]}
  - name: embed-b
    model: {backend: python}
    handler: %(echo)s
    api: {kind: openai}
    auth: {api_keys: [b-only]}
    devices: {accelerator: cuda, ids: [1], workers_per_device: 2}
  - name: stats
    handler: %(stats)s
    devices: {accelerator: cpu}
"""


def deployment(tmp_path: Path) -> Deployment:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC % {"echo": ROOT / "handlers" / "echo_llm.py", "stats": ROOT / "handlers" / "text_stats.py"})
    return Deployment(load_deployment([path]), plan=DevicePlanner(gpus=(2, "")))


def test_each_model_pins_its_devices_and_two_share_a_gpu(tmp_path: Path) -> None:
    models = deployment(tmp_path).models
    assert [(s.accelerator, s.gpu_id) for s in models["embed-a"].slots] == [("cuda", 1)]
    assert [(s.accelerator, s.gpu_id) for s in models["embed-b"].slots] == [("cuda", 1), ("cuda", 1)]
    assert [s.accelerator for s in models["stats"].slots] == ["cpu"]
    assert models["embed-a"].scheduler is not models["embed-b"].scheduler  # a queue each


def test_openai_routes_are_shared_and_keys_are_per_model(tmp_path: Path) -> None:
    built = deployment(tmp_path)
    endpoints = build_endpoints(built, APIKeyAuth(built.spec.auth))
    chat = endpoints["/v1/chat/completions"]
    assert isinstance(chat, ByModel) and list(chat.endpoints) == ["embed-a", "embed-b"]
    assert chat.keys is None, "a model with keys of its own: checked once the body names the model"
    own, other = chat.endpoints["embed-b"].keys, chat.endpoints["embed-a"].keys
    assert own is not None and b"b-only" in own and b"shared" in own
    assert other is not None and b"b-only" not in other and b"shared" in other
    stats = endpoints["/models/stats/predict"]
    assert isinstance(stats, ModelEndpoint) and stats.keys is not None and b"b-only" not in stats.keys


def test_a_predict_path_on_an_openai_route_is_refused(tmp_path: Path) -> None:
    built = deployment(tmp_path)
    stats = built.models["stats"]
    stats.spec = stats.spec.model_copy(update={"api": stats.spec.api.model_copy(update={"path": "/v1/embeddings"})})
    with pytest.raises(RouteClash, match="/v1/embeddings is a route of several models"):
        build_endpoints(built, APIKeyAuth(built.spec.auth))


def test_a_reload_that_cannot_start_is_said_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    built = deployment(tmp_path)
    spec_file = tmp_path / "spec.yaml"
    built.reload_from = ([spec_file], [])
    spec_file.write_text(spec_file.read_text().replace("workers_per_device: 2", "workers_per_device: 0"))
    with caplog.at_level(logging.ERROR, logger="servectl"):
        results = asyncio.run(built.reload_all())  # what SIGHUP runs
    assert [r["reloaded"] for r in results] == [False, False, False]
    assert "models.1.devices.workers_per_device" in results[0]["error"]
    assert "reload of model stats: the spec no longer loads" in caplog.text
    with pytest.raises(ReloadError) as missing:
        asyncio.run(built.reload("nope"))
    assert missing.value.failure.status == 404 and "embed-a, embed-b, stats" in missing.value.failure.message
