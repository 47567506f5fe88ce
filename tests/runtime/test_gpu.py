"""CUDA placement, run only where a GPU is visible (CI has none: these skip)."""

from __future__ import annotations

import httpx
import pytest

from servectl.worker.devices import count_gpus

GPUS, WHY = count_gpus()
pytestmark = pytest.mark.skipif(GPUS == 0, reason=f"no CUDA GPU here ({WHY})")


def test_each_worker_sees_only_its_gpu(serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    handler = tmp_path / "where.py"
    handler.write_text(
        "import os, torch\n"
        "state = {}\n"
        "def setup(device, spec):\n"
        "    state['t'] = torch.zeros(1, device=device)\n"
        "def predict(batch):\n"
        "    return [{'visible': os.environ['CUDA_VISIBLE_DEVICES'], 'count': torch.cuda.device_count(),\n"
        "             'device': str(state['t'].device)} for _ in batch]\n"
    )
    server = serve({"handler": str(handler), "devices": {"accelerator": "cuda", "workers_per_device": 2}})
    seen = {tuple(sorted(httpx.post(server.url + "/predict", json={}).json().items())) for _ in range(40)}
    for answer in map(dict, seen):
        assert answer["count"] == 1 and answer["device"] == "cuda:0"
    assert len(httpx.get(server.url + "/info").json()["devices"]["workers"]) == 2 * GPUS


def test_onnx_uses_the_cuda_provider(serve, models) -> None:  # type: ignore[no-untyped-def]
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here")
    server = serve(
        {
            "model": {"backend": "onnx", "path": str(models / "tiny_net.onnx")},
            "devices": {"accelerator": "cuda", "ids": 1},
        }
    )
    assert httpx.post(server.url + "/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]}).status_code == 200
    assert "CUDAExecutionProvider" in server.log()


def test_gpu_memory_and_utilisation_per_worker_in_metrics(serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("pynvml")
    handler = tmp_path / "holds.py"
    handler.write_text(
        "import torch\n"
        "state = {}\n"
        "def setup(device, spec):\n"
        "    state['t'] = torch.zeros(64 * 2**20, device=device)  # 256 MiB\n"
        "def predict(batch):\n"
        "    return [float(state['t'].sum()) for _ in batch]\n"
    )
    server = serve({"handler": str(handler), "devices": {"accelerator": "cuda", "ids": 1}})
    assert httpx.post(server.url + "/predict", json={}).json() == 0.0
    assert server.metric("servectl_worker_gpu_memory_bytes", worker="0") >= 256 * 2**20
    text = httpx.get(server.url + "/metrics").text
    assert 'servectl_worker_gpu_utilization_ratio{model="servectl",worker="0"}' in text
