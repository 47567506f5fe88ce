"""Shared fixtures: real `servectl serve` subprocesses on free 127.0.0.1 ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from servectl.bench.runner import free_port

ROOT = Path(__file__).resolve().parent.parent
TOOLBOX = ROOT / "tests" / "handlers" / "toolbox.py"


class Server:
    """One `servectl serve` process: started, probed, stopped by its own pid."""

    def __init__(
        self, spec_path: Path, env: dict[str, str] | None = None, overrides: list[str] = (), log_dir: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="servectl-test-"))) / (spec_path.stem + ".log")
        self._log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.pop("SERVECTL_API_KEYS", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "servectl", "serve", str(spec_path), f"server.port={self.port}", *overrides],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
            start_new_session=True,  # its own process group: a test may signal the whole group
        )

    def wait_live(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not live in {timeout}s:\n{self.log()}")

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_live(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample's values whose labels include `labels`."""
        total = 0.0
        for line in httpx.get(self.url + "/metrics", timeout=5, headers=self.headers).text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, label_text = sample.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    headers: dict[str, str] = {}


def write_spec(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


STREAMER = ROOT / "tests" / "handlers" / "streamer.py"


def streamer_spec(**sections: dict) -> dict:
    """The streaming test handler, one request per batch, streamed as NDJSON by default."""
    spec: dict = {
        "handler": str(STREAMER),
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 1},
        "api": {"stream": True},
        "server": {"access_log": False},
    }
    for key, value in sections.items():
        spec.setdefault(key, {}).update(value)
    return spec


def echo_llm_spec() -> dict:
    """The example custom OpenAI handler (complete/render/count_tokens/embed), on the CPU."""
    return {
        "name": "echo-llm",
        "handler": str(ROOT / "handlers" / "echo_llm.py"),
        "model": {"backend": "python"},
        "api": {"kind": "openai"},
        "devices": {"accelerator": "cpu"},
    }


def toolbox_spec(**sections: dict) -> dict:
    spec: dict = {
        "name": "toolbox",
        "handler": str(TOOLBOX),
        "devices": {"accelerator": "cpu", "workers_per_device": 1},
        "batching": {"max_batch_size": 8, "max_wait_ms": 5},
        "limits": {"timeout_s": 10, "max_queue": 256},
        "server": {"access_log": True},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    return spec


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start servers for a test; every one is stopped at the end."""
    started: list[Server] = []

    def start(spec: dict, env: dict[str, str] | None = None, ready: bool = True, overrides: list[str] = ()) -> Server:
        server = Server(write_spec(tmp_path, spec, f"spec{len(started)}.yaml"), env, list(overrides))
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example models of `python -m servectl.examples.build`, built once per session."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from servectl.examples.build import build_classifier, build_gpt2, build_torch

    out = tmp_path_factory.mktemp("models")
    build_torch(out)
    build_gpt2(out / "tiny-gpt2")
    build_classifier(out / "tiny-classifier")
    return out


def minilm_reference(path: Path, texts: list[str]) -> list[list[float]]:
    """MiniLM embeddings computed in-process one text at a time (no padding): the ground truth."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    out = []
    for text in texts:
        tokens = tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**tokens).last_hidden_state
        out.append(torch.nn.functional.normalize(hidden.mean(1), dim=1)[0].tolist())
    return out


def resolved(document: dict, node: dict) -> dict:
    """An OpenAPI schema with its `$ref` to a component followed."""
    ref = node.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else node
