"""The specs tests serve, as dicts (`servers.write_spec` puts one on disk)."""

from __future__ import annotations

from pathlib import Path

from support.paths import ROOT, STREAMER, TOOLBOX


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


def gpt2_openai_spec(models: Path) -> dict:
    """The tiny GPT-2 behind the OpenAI routes, with a key."""
    return {
        "name": "tiny-gpt2",
        "model": {
            "backend": "transformers",
            "task": "text-generation",
            "path": str(models / "tiny-gpt2"),
            "max_new_tokens": 8,
        },
        "api": {"kind": "openai"},
        "auth": {"api_keys": ["sk-test"]},
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 8},
    }


def minilm_openai_spec(models: Path) -> dict:
    """configs/embeddings.yaml's MiniLM behind the OpenAI routes."""
    from servectl.spec import load_spec

    spec = load_spec(ROOT / "configs" / "embeddings.yaml", ["devices.accelerator=cpu"])
    return {
        "name": "minilm",
        "model": spec.model.model_dump(),
        "api": {"kind": "openai"},
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 32},
    }
