"""`servectl convert`: the example models exported to ONNX, checked, and served from the written specs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from servectl.cli import app

from support.paths import ROOT
from support.servers import Server, write_spec

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("transformers")

FEATURES = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0], [0.0, 0.0, 0.0, 0.0]]
TEXTS = ["a worker process runs the model on its own device", "batches form", "the quick brown fox"]
TENSOR_CONFIGS = ("torchscript", "torch_export", "torch_factory")  # tiny_net as .ts, .pt2, factory + state dict


def run_convert(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["convert", *args])
    return result.exit_code, result.output


def embed_spec(models: Path) -> dict:
    """feature-extraction over the tiny BERT, behind the OpenAI routes (which an ONNX model cannot keep)."""
    return {
        "name": "tiny-embed",
        "model": {
            "backend": "transformers",
            "task": "feature-extraction",
            "path": str(models / "tiny-classifier"),
            "example": {"inputs": ["servectl serves models", "hello"]},
        },
        "api": {"kind": "openai"},
        "devices": {"accelerator": "cpu"},
    }


@dataclass
class Converted:
    folder: Path
    outputs: dict[str, str]  # config -> what `convert` printed
    server: Server


@pytest.fixture(scope="module")
def converted(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Converted]:
    """Every example model converted with --write-spec, and one server serving all the written specs."""
    folder = tmp_path_factory.mktemp("converted")
    sources = {name: ROOT / "configs" / f"{name}.yaml" for name in (*TENSOR_CONFIGS, "classifier")}
    sources["embed"] = write_spec(folder, embed_spec(models), "embed-source.yaml")
    outputs = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SERVECTL_MODELS", str(models))
        for name, source in sources.items():
            out, spec = folder / "onnx" / f"{name}.onnx", folder / "specs" / f"{name}.yaml"
            code, output = run_convert(str(source), "--out", str(out), "--write-spec", str(spec))
            assert code == 0, output
            outputs[name] = output
    specs = [folder / "specs" / f"{name}.yaml" for name in sources]
    names = [yaml.safe_load(s.read_text())["name"] for s in specs]
    on_cpu = [f"models.{n}.devices.accelerator=cpu" for n in names]
    server = Server(specs[0], overrides=[*map(str, specs[1:]), *on_cpu], log_dir=folder)
    try:
        server.wait_ready()
        yield Converted(folder, outputs, server)
    finally:
        server.stop()


def reference_scores(models: Path, rows: list[list[float]]) -> np.ndarray:
    module = torch.jit.load(str(models / "tiny_net.ts"))
    with torch.inference_mode():
        return module(torch.tensor(rows)).numpy()


async def post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(client.post(url, json=b) for b in bodies))


@pytest.mark.parametrize("config", TENSOR_CONFIGS)
def test_tensor_models_convert_and_serve_the_same_numbers(converted: Converted, models: Path, config: str) -> None:
    output = converted.outputs[config]
    assert "largest absolute difference" in output and ": ok" in output, output
    assert "[-1, 4] float32" in output  # the batch axis is dynamic
    written = yaml.safe_load((converted.folder / "specs" / f"{config}.yaml").read_text())
    source = yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text())
    assert written["name"] == source["name"] and written["batching"] == source["batching"]
    assert written["model"] == {
        "backend": "onnx",
        "path": f"../onnx/{config}.onnx",
        "example": source["model"]["example"],
    }
    url = f"{converted.server.url}/models/{written['name']}/predict"
    served = httpx.post(url, json={"inputs": FEATURES}, timeout=30).json()["outputs"]
    np.testing.assert_allclose(served, reference_scores(models, FEATURES), rtol=1e-5, atol=1e-6)


def transformers_runner(spec: dict) -> Any:
    """The transformers runner of `spec`, set up in-process on the CPU: the reference."""
    from servectl.runners.transformers import RUNNERS
    from servectl.spec import Spec

    loaded = Spec.model_validate(spec)
    runner = RUNNERS[loaded.model.task](loaded)
    runner.setup("cpu", loaded)
    return runner


def test_text_classifier_serves_logits_whose_softmax_is_the_runners_scores(converted: Converted, models: Path) -> None:
    assert "logits [-1, 2] float32" in converted.outputs["classifier"]
    text = (ROOT / "configs" / "classifier.yaml").read_text()
    spec = yaml.safe_load(text.replace("${oc.env:SERVECTL_MODELS,../models}", str(models)))
    runner = transformers_runner(spec)
    expected = [
        {label["label"]: label["score"] for label in row} for row in runner.predict([(t, {"top_k": 2}) for t in TEXTS])
    ]
    url = f"{converted.server.url}/models/tiny-classifier/predict"
    labels = runner.model.config.id2label
    # one request padded by the client, and one request per text (batched by the server, padded with model.pad 0)
    padded = dict(runner.tokenizer(TEXTS, padding=True))
    batch = httpx.post(url, json={"inputs": padded}, timeout=30).json()["outputs"]
    singles = asyncio.run(post_all(url, [{"inputs": {k: [v] for k, v in runner.tokenizer(t).items()}} for t in TEXTS]))
    for logits in (batch, [r.json()["outputs"][0] for r in singles]):
        scores = torch.tensor(logits).softmax(-1)
        got = [{labels[i]: float(s) for i, s in enumerate(row)} for row in scores]
        for want, have in zip(expected, got, strict=True):
            assert want.keys() == have.keys()
            np.testing.assert_allclose([have[k] for k in want], list(want.values()), atol=1e-5)
    written = (converted.folder / "specs" / "classifier.yaml").read_text()
    assert "0: NEGATIVE, 1: POSITIVE" in written  # the header says how to read the logits
    example = yaml.safe_load(written)["model"]["example"]
    answer = httpx.post(url, json=example, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["outputs"][0]) == 2


def test_feature_extraction_serves_the_runners_embeddings(converted: Converted, models: Path) -> None:
    output = converted.outputs["embed"]
    assert "embeddings [-1, 32] float32" in output and "api.kind predict" in output, output
    written = yaml.safe_load((converted.folder / "specs" / "embed.yaml").read_text())
    assert written["api"] == {"kind": "predict"} and written["model"]["pad"] == 0
    runner = transformers_runner(embed_spec(models))
    expected = runner.predict([(t, {}) for t in TEXTS])
    url = f"{converted.server.url}/models/tiny-embed/predict"
    answers = asyncio.run(post_all(url, [{"inputs": {k: [v] for k, v in runner.tokenizer(t).items()}} for t in TEXTS]))
    got = [r.json()["outputs"][0] for r in answers]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # model.normalize: true


def test_text_generation_is_refused_with_the_reason(
    models: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SERVECTL_MODELS", str(models))
    code, output = run_convert(str(ROOT / "configs" / "generate.yaml"), "--out", str(tmp_path / "g.onnx"))
    assert code == 1 and "text-generation is not supported" in output and "backend transformers" in output
    assert not (tmp_path / "g.onnx").exists()


def test_unknown_shapes_name_model_inputs_and_declared_ones_export(tmp_path: Path) -> None:
    spec = {"name": "bare", "model": {"backend": "pytorch", "factory": "servectl.examples.tiny_net:build_model"}}
    code, output = run_convert(str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "bare.onnx"))
    assert code == 1 and "model.inputs" in output and "{name: input, shape: [-1, 4]" in output, output
    spec["model"]["inputs"] = [{"name": "features", "shape": [-1, 4]}]
    code, output = run_convert(str(write_spec(tmp_path, spec)), "--out", str(tmp_path / "bare.onnx"))
    assert code == 0 and "features [-1, 4] float32" in output and "random inputs, 3 items" in output, output


NOISY = """
import torch


class Noisy(torch.nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)  # another draw in torch and in onnxruntime


def build_model():
    return Noisy()
"""


def test_outputs_that_differ_beyond_atol_fail(tmp_path: Path) -> None:
    (tmp_path / "noisy.py").write_text(NOISY)
    spec = {
        "model": {"backend": "pytorch", "factory": "noisy.py:build_model", "inputs": [{"name": "x", "shape": [-1, 4]}]}
    }
    path, target = write_spec(tmp_path, spec), tmp_path / "noisy.yaml"
    code, output = run_convert(str(path), "--out", str(tmp_path / "n.onnx"), "--write-spec", str(target))
    assert code == 1 and "too large" in output and "no spec written" in output, output
    assert not target.exists()
    code, output = run_convert(str(path), "--out", str(tmp_path / "n.onnx"), "--atol", "10")
    assert code == 0, output


def test_several_models_need_model_and_only_torch_models_convert(tmp_path: Path) -> None:
    multi = str(ROOT / "configs" / "multi.yaml")
    code, output = run_convert(multi, "--out", str(tmp_path / "m.onnx"))
    assert code == 1 and "pick one with --model (text-stats, echo-llm, tiny-onnx)" in output, output
    code, output = run_convert(multi, "--model", "tiny-onnx", "--out", str(tmp_path / "m.onnx"))
    assert code == 1 and "ONNX already" in output, output
    code, output = run_convert(multi, "--model", "nope", "--out", str(tmp_path / "m.onnx"))
    assert code == 1 and "no model 'nope'" in output, output


def test_written_spec_keeps_key_interpolations_not_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from servectl.convert.common import Export
    from servectl.convert.spec_out import write_onnx_spec
    from servectl.spec import load_spec

    monkeypatch.setenv("CONVERT_TEST_KEYS", "sk-very-secret")
    source = write_spec(
        tmp_path,
        {
            "name": "keyed",
            "model": {"backend": "pytorch", "path": "model.ts"},
            "auth": {"api_keys": "${oc.env:CONVERT_TEST_KEYS}", "protect_docs": True},
            "api": {"kind": "v2"},
        },
    )
    target = tmp_path / "out" / "keyed.yaml"
    write_onnx_spec(
        load_spec(source), tmp_path / "model.onnx", target, Export("test", [], [], []), ["x [-1, 4] float32"]
    )
    text = target.read_text()
    assert "sk-very-secret" not in text and "${oc.env:CONVERT_TEST_KEYS}" in text
    written = load_spec(target)
    assert written.auth.api_keys == ["sk-very-secret"] and written.auth.protect_docs and written.api.kind == "v2"
    assert written.model.backend == "onnx" and written.model_path() == (target.parent / "../model.onnx")
