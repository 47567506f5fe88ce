"""Clients of several models, generated in-process: a group of calls per model, the OpenAI
calls of each OpenAI-kind model with `model` filled in, the deployment's own calls on top."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from servectl.clientgen import Source, from_spec, generate
from servectl.clientgen.operations import group_operations
from servectl.spec import load_deployment, load_spec

from support.paths import ROOT
from support.servers import write_spec
from support.specs import echo_llm_spec

MULTI = ROOT / "configs" / "multi.yaml"
TOP = {"health", "ready", "info", "metrics", "models", "retrieve_model", "server_ready", "model_metadata"}


@pytest.fixture(scope="module")
def multi_source() -> Source:
    """configs/multi.yaml's document: no model loads, so the ONNX file need not exist."""
    return from_spec(load_deployment([MULTI], []), "configs/multi.yaml")


@pytest.fixture(scope="module")
def multi_client(multi_source: Source, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    pytest.importorskip("datamodel_code_generator")
    path = tmp_path_factory.mktemp("multi") / "multi_client.py"
    path.write_text(generate(multi_source, "python", "http://127.0.0.1:8040"))
    spec = importlib.util.spec_from_file_location("generated_multi_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the models' annotations through it
    spec.loader.exec_module(module)
    return module


def _methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}


def test_operations_are_grouped_by_model(multi_source: Source) -> None:
    top, groups = group_operations(multi_source.schema)
    assert [(g.model, g.kind, g.attr) for g in groups] == [
        ("text-stats", "predict", "text_stats"),
        ("echo-llm", "openai", "echo_llm"),
        ("tiny-onnx", "v2", "tiny_onnx"),
    ]
    calls = {g.attr: [op.call for op in g.operations] for g in groups}
    assert calls == {
        "text_stats": ["predict"],
        "echo_llm": ["predict", "chat_completions", "completions", "create_response", "embeddings"],
        "tiny_onnx": ["predict", "infer"],
    }
    assert {op.name for op in top} >= TOP and not any(op.models for op in top)
    assert groups[1].prefilled == {"chat_completions", "completions", "create_response", "embeddings"}
    assert not groups[0].prefilled and not groups[2].prefilled
    one = from_spec(load_spec(ROOT / "configs" / "openai_custom.yaml"), "x").schema
    assert group_operations(one)[1] == []  # one model: no groups, the client as it always was


def test_python_client_has_a_group_per_model(multi_client: ModuleType) -> None:
    gen = multi_client
    for client, prefix in ((gen.Client, ""), (gen.AsyncClient, "Async")):
        groups = {n: v for n, v in vars(client).items() if isinstance(v, cached_property)}
        assert list(groups) == ["text_stats", "echo_llm", "tiny_onnx"]
        assert _methods(client) >= TOP
        assert not _methods(client) & {"predict", "chat_completions", "infer", "text_stats_predict", "tiny_onnx_infer"}
        assert _methods(getattr(gen, f"{prefix}TextStatsCalls")) == {"predict"}
        assert _methods(getattr(gen, f"{prefix}EchoLlmCalls")) == {
            "predict",
            "chat_completions",
            "chat_completions_stream",
            "completions",
            "completions_stream",
            "create_response",
            "create_response_stream",
            "embeddings",
        }
        assert _methods(getattr(gen, f"{prefix}TinyOnnxCalls")) == {"predict", "infer"}
    async_infer = gen.AsyncTinyOnnxCalls.infer
    assert inspect.iscoroutinefunction(async_infer) and inspect.signature(async_infer).return_annotation in (
        "InferResponse",
        gen.InferResponse,
    )
    with gen.Client("http://127.0.0.1:9") as client:
        assert client.text_stats is client.text_stats  # one group object per client
        assert isinstance(client.tiny_onnx, gen.TinyOnnxCalls)


def _recording(sent: list[tuple[str, Any]]) -> httpx.MockTransport:
    """Answers every request 418 (so a call raises APIError) after noting its path and body."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, json.loads(request.content) if request.content else None))
        return httpx.Response(418, json={"error": {"message": "noted"}})

    return httpx.MockTransport(answer)


def test_openai_calls_fill_in_the_model_unless_the_caller_names_one(multi_client: ModuleType) -> None:
    gen = multi_client
    sent: list[tuple[str, Any]] = []
    messages = [{"role": "user", "content": "hi"}]
    with gen.Client("http://x", http=httpx.Client(transport=_recording(sent))) as client:
        calls = [
            lambda: client.echo_llm.chat_completions({"messages": messages}),
            lambda: list(client.echo_llm.chat_completions_stream({"messages": messages})),
            lambda: client.echo_llm.embeddings({"input": ["a"], "model": "other"}),
            lambda: client.echo_llm.predict({"text": "a"}),
            lambda: client.text_stats.predict({"text": "a"}),
        ]
        for call in calls:
            with pytest.raises(gen.APIError):
                call()
    assert sent == [
        ("/v1/chat/completions", {"model": "echo-llm", "messages": messages}),
        ("/v1/chat/completions", {"model": "echo-llm", "messages": messages, "stream": True}),
        ("/v1/embeddings", {"input": ["a"], "model": "other"}),
        ("/models/echo-llm/predict", {"text": "a"}),
        ("/models/text-stats/predict", {"text": "a"}),
    ]

    async def completions() -> None:
        http = httpx.AsyncClient(transport=_recording(sent))
        async with gen.AsyncClient("http://x", http=http) as client:
            with pytest.raises(gen.APIError):
                await client.echo_llm.completions({"prompt": "p"})

    asyncio.run(completions())
    assert sent[-1] == ("/v1/completions", {"model": "echo-llm", "prompt": "p"})


def test_shared_openai_routes_are_in_each_openai_models_group(tmp_path: Path) -> None:
    entries = [{**echo_llm_spec(), "name": name} for name in ("echo-a", "echo-b")]
    stats = {"name": "stats", "handler": "handlers/text_stats.py"}
    spec = write_spec(tmp_path, {"models": [*entries, stats], "auth": {"admin_keys": ["admin"]}})
    source = from_spec(load_deployment([spec], []), "x")
    top, groups = group_operations(source.schema)
    assert {op.name for op in top}.isdisjoint({"chat_completions", "completions", "embeddings"})
    assert "reload" in {op.name for op in top}  # the admin route: the deployment's, any model by name
    for group in groups[:2]:
        assert group.prefilled == {"chat_completions", "completions", "create_response", "embeddings"}
    curl = generate(source, "curl", "http://h")
    assert "## Model `echo-b` (api.kind openai)" in curl and '"model": "echo-b"' in curl
    assert curl.index("## Model `stats`") < curl.index("## Every model") < curl.index("### `health`")
    assert "/admin/models/echo-a/reload" in curl and "/v1/models/echo-a" in curl
    if importlib.util.find_spec("datamodel_code_generator"):
        text = generate(source, "python", "http://h")
        assert (
            '{"model": "echo-b", **dump(body, "stream")}' in text and "class AsyncStatsModelCalls(_AsyncCalls):" in text
        )  # `stats` is the /stats call


def test_typescript_client_has_a_group_per_model(multi_source: Source, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's text (the types from openapi-typescript are stubbed: no Node.js needed here;
    the end-to-end test type-checks and runs a real one)."""
    monkeypatch.setattr("servectl.clientgen.typescript._types", lambda source: "export interface operations {}\n")
    text = generate(multi_source, "typescript", "http://127.0.0.1:8040")
    first = '// Client of the servectl deployment of 3 models: "text-stats" (predict), "echo-llm" (openai), '
    assert text.startswith(first + '"tiny-onnx" (v2).\n')
    for group, cls in (("textStats", "TextStatsCalls"), ("echoLlm", "EchoLlmCalls"), ("tinyOnnx", "TinyOnnxCalls")):
        assert f"  readonly {group} = new {cls}(this.request.bind(this), this.stream.bind(this));" in text
        assert f"export class {cls} extends ModelCalls {{" in text
    assert (
        '  async chatCompletions(body: Omit<JsonBody<"echo_llm_chat_completions">, "model"> & { model?: string })'
        in text
    )
    assert '{ model: "echo-llm", ...body, stream: true }' in text
    assert '  async infer(body: JsonBody<"tiny_onnx_infer">): Promise<JsonAnswer<"tiny_onnx_infer">> {' in text
    client = text[text.index("export class Client extends ClientBase {") :]
    assert "  async health(): " in client and "  async infer(" not in client and "async predict(" not in client
