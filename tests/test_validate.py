"""`servectl validate` in process: `--smoke` answers each route's example as a worker would
(streams and OpenAI routes included), the handler line says what a handler does, and schema
problems are listed together with the handler's."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from servectl.cli import app

from support.paths import ROOT

# README's streaming example as it was first written: no `request_model`, so `r.n` fails on a dict
DICT_STREAMER = """
from servectl.sdk import END

example = {"n": 3}


def predict(batch):
    for step in range(max(r.n for r in batch) + 1):
        yield [{"token": step} if step < r.n else (END if step == r.n else None) for r in batch]
"""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", *args])
    return result.exit_code, result.output


def test_smoke_streams_the_shipped_streaming_example() -> None:
    code, output = invoke("--smoke", str(ROOT / "configs" / "countdown_stream.yaml"))
    assert code == 0, output
    assert 'smoke test predict: 200, 3 chunk(s), first {"token":0}' in output
    assert "handlers/countdown_stream.py (hooks predict; streams)" in output


def test_smoke_fails_a_stream_that_breaks_on_its_example(tmp_path: Path) -> None:
    (tmp_path / "streamer.py").write_text(DICT_STREAMER)
    (tmp_path / "spec.yaml").write_text("name: s\nhandler: streamer.py\napi: {stream: true}\n")
    code, output = invoke(str(tmp_path / "spec.yaml"))
    assert code == 0, output  # importable, with the hooks the contract asks for
    code, output = invoke("--smoke", str(tmp_path / "spec.yaml"))
    assert code == 1 and "smoke test predict answered 500" in output
    assert "'dict' object has no attribute 'n'" in output


def test_smoke_runs_the_openai_routes_of_a_complete_handler() -> None:
    code, output = invoke("--smoke", str(ROOT / "configs" / "openai_custom.yaml"))
    assert code == 0, output
    for route in ("chat", "completions", "embeddings"):
        assert f"smoke test {route}: 200" in output
    assert "handlers/echo_llm.py (OpenAI contract: complete, embed)" in output


def test_schema_problems_and_handler_problems_are_listed_together(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def predict(a, b):\n    return a\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nhandler: broken.py\nbatching: {max_batch_size: 0}\n")
    code, output = invoke(str(spec))
    assert code == 1 and "2 problem(s)" in output, output
    assert f"{spec}:3:12: batching.max_batch_size:" in output
    assert f"{spec}:2:1: handler: broken.py.predict must take exactly one positional argument" in output
    multi = tmp_path / "multi.yaml"
    multi.write_text(
        "server: {port: 0}\nmodels:\n  - name: a\n    handler: missing.py\n"
        "  - name: b\n    handler: broken.py\n    limits: {timeout_s: -1}\n"
    )
    code, output = invoke(str(multi))
    assert code == 1 and "3 problem(s)" in output, output
    assert "models.0.handler: handler file 'missing.py' not found" in output
    assert "models.1.handler: broken.py.predict must take" in output
    assert "models.1.limits.timeout_s" in output
