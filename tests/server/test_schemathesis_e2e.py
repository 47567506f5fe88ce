"""Schemathesis (`st run --checks all`) over the served OpenAPI of a typed predict deployment,
an OpenAI-kind one and a V2 one: every answer is documented, in its documented shape and
content type, no schema-valid request gets a 5xx, schema-invalid ones are refused, auth is
not ignored.

One allowance, in `SCHEMATHESIS_CONFIG`: a schema-valid request may get a 400 or 422 where
JSON Schema cannot say what the model takes (a tensor whose data does not fill its shape, a
prompt plus `max_tokens` beyond the model's context, as OpenAI also answers); every other
check runs as shipped.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.paths import ROOT

pytest.importorskip("schemathesis")

SCHEMATHESIS_CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
"""


def run_schemathesis(url: str, key: str, folder: Path, examples: int = 15) -> subprocess.CompletedProcess[str]:
    config = folder / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    beside = Path(sys.executable).parent / "st"  # the running environment's, activated or not
    st = str(beside) if beside.exists() else shutil.which("st") or "st"
    command = [st, "--config-file", str(config), "run", f"{url}/openapi.json", "--checks", "all"]
    command += ["--max-examples", str(examples), "-H", f"Authorization: Bearer {key}", "--seed", "1"]
    command += ["--phases", "examples,coverage,fuzzing", "--max-failures", "5"]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=folder)


@pytest.mark.parametrize("kind", ["predict", "openai", "v2"])
def test_schemathesis_finds_nothing(serve, models: Path, tmp_path: Path, kind: str) -> None:
    auth = {"api_keys": ["k1"]}
    cpu = {"accelerator": "cpu"}
    specs = {
        "predict": {"name": "typed", "handler": str(ROOT / "tests" / "handlers" / "typed.py"), "devices": cpu},
        "openai": {
            "name": "tiny-gpt2",
            "model": {
                "backend": "transformers",
                "task": "text-generation",
                "path": str(models / "tiny-gpt2"),
                "max_new_tokens": 4,
            },
            "api": {"kind": "openai"},
            "devices": cpu,
        },
        "v2": {
            "name": "tiny",
            "model": {"backend": "onnx", "path": str(models / "tiny_net.onnx")},
            "api": {"kind": "v2"},
        },
    }
    server = serve({**specs[kind], "auth": auth, "devices": cpu, "server": {"access_log": False}})
    result = run_schemathesis(server.url, "k1", tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "FAILURES" not in result.stdout and " passed" in result.stdout, result.stdout[-3000:]
