"""Unit tests of client-gen's pieces: the client runtime, schema reading, error messages."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from servectl.cli import app
from servectl.clientgen import from_spec
from servectl.clientgen.operations import read_operations
from servectl.clientgen.pyruntime import StreamError, _Events, dump, retry_delay
from servectl.spec import load_spec

from support.paths import ROOT


def _answer(headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(503, headers=headers)


def test_retry_delay_honours_retry_after_and_caps_it() -> None:
    assert retry_delay(_answer({"retry-after": "2"}), 0, 0.5, 10) == 2.0
    assert retry_delay(_answer({"retry-after": "120"}), 0, 0.5, 10) == 10.0
    assert retry_delay(_answer({}), 3, 0.5, 10) == 4.0  # back-off: 0.5 * 2**3
    date = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.0 < retry_delay(_answer({"retry-after": date}), 0, 0.5, 10) <= 5.0
    assert retry_delay(_answer({"retry-after": "soon"}), 1, 0.5, 10) == 1.0


def test_sse_events_end_at_done_and_raise_error_events() -> None:
    events = _Events("sse", "[DONE]", "rid-1")
    assert events.feed('data: {"a": 1}') == [{"a": 1}] and events.feed("") == []
    assert events.feed("data: [DONE]") == [] and events.finished
    failing = _Events("sse", None, "rid-2")
    failing.feed("event: error")
    with pytest.raises(StreamError) as info:
        failing.feed('data: {"error": {"message": "out of memory"}}')
    assert info.value.request_id == "rid-2" and "out of memory" in str(info.value)


def test_ndjson_events_raise_servectl_errors_only() -> None:
    events = _Events("ndjson", None, None)
    assert events.feed('{"error": "a chunk may have this key"}') == [{"error": "a chunk may have this key"}]
    with pytest.raises(StreamError):
        events.feed('{"error": {"type": "timeout", "message": "too slow", "request_id": "r"}}')


def test_dump_leaves_unset_fields_to_the_server_and_sets_the_stream_flag() -> None:
    from pydantic import BaseModel

    class Body(BaseModel):
        text: str
        n: int = 1

    assert dump(Body(text="x")) == {"text": "x"}
    assert dump({"text": "x"}, "stream") == {"text": "x", "stream": True}


def test_operations_read_from_a_spec_name_streams_and_probe_answers() -> None:
    ops = {op.name: op for op in read_operations(from_spec(load_spec(ROOT / "configs/openai_custom.yaml"), "x").schema)}
    assert {"health", "ready", "chat_completions", "completions", "embeddings", "models"} <= ops.keys()
    chat = ops["chat_completions"]
    assert chat.stream is not None and (chat.stream.format, chat.stream.flag, chat.stream.done) == (
        "sse",
        "stream",
        "[DONE]",
    )
    assert chat.body == {"$ref": "#/components/schemas/ChatRequest"} and chat.example["model"] == "echo-llm"
    assert ops["ready"].answers == (503,) and ops["metrics"].response is None
    assert ops["embeddings"].stream is None


def test_cli_errors_are_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner = CliRunner()
    unreachable = runner.invoke(app, ["client-gen", "http://127.0.0.1:9/", "--out", str(tmp_path / "c.py")])
    assert unreachable.exit_code == 1 and "cannot read http://127.0.0.1:9/openapi.json" in unreachable.output
    monkeypatch.setattr("shutil.which", lambda name: None)
    spec = str(ROOT / "configs/quickstart.yaml")
    no_node = runner.invoke(app, ["client-gen", spec, "--lang", "typescript", "--out", str(tmp_path / "c.ts")])
    assert no_node.exit_code == 1 and "needs Node.js" in no_node.output
    bad = runner.invoke(app, ["client-gen", spec, "--lang", "cobol", "--out", str(tmp_path / "c")])
    assert bad.exit_code == 1 and "--lang must be one of python, typescript, curl" in bad.output


def test_openapi_lists_only_the_openai_routes_a_custom_handler_implements(tmp_path: Path) -> None:
    handler = tmp_path / "only_complete.py"
    handler.write_text("def complete(prompt, sampling):\n    yield prompt\n")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(f"name: lm\nmodel: {{backend: python}}\nhandler: {handler}\napi: {{kind: openai}}\n")
    paths = from_spec(load_spec(spec_path), "x").schema["paths"]
    assert "/v1/chat/completions" in paths and "/v1/completions" in paths
    assert "/v1/embeddings" not in paths
