"""Every shipped config passes `servectl validate --smoke` (with the example models built), and
the shipped streaming example streams when served as written."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from servectl.cli import app

from support.paths import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_passes_smoke(config: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVECTL_MODELS", str(models))
    monkeypatch.delenv("SERVECTL_API_KEYS", raising=False)
    result = CliRunner().invoke(app, ["validate", "--smoke", str(config)])
    assert result.exit_code == 0, result.output
    assert "smoke test" in result.output and "answered" not in result.output


def test_countdown_stream_serves_as_written(serve) -> None:
    spec = yaml.safe_load((ROOT / "configs" / "countdown_stream.yaml").read_text())
    server = serve(spec)  # the handler path resolves from the repository root (the server's cwd)
    with httpx.stream("POST", server.url + "/predict", json={"n": 3}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        assert [json.loads(line) for line in r.iter_lines() if line] == [{"token": 0}, {"token": 1}, {"token": 2}]
    sse = httpx.post(server.url + "/predict", json={"n": 2}, headers={"Accept": "text/event-stream"})
    assert sse.text == 'data: {"token":0}\n\ndata: {"token":1}\n\n'
    bad = httpx.post(server.url + "/predict", json={"n": -1})
    assert bad.status_code == 422 and bad.json()["error"]["detail"][0]["loc"] == ["n"]
