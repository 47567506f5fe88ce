"""The specs the structured-output and tool-calling tests serve: a tiny GPT-2 with a context
long enough for prompts that list tools (built here, no download), and the tool-calling
custom handler."""

from __future__ import annotations

from pathlib import Path

from support.paths import ROOT

MODEL = "tiny-gpt2-tools"


def long_gpt2(folder: Path) -> Path:
    """Built once in `folder` (the session's base temp: every module serves the same path, so
    `shared_serve` starts one server for them all)."""
    from servectl.examples.build import build_gpt2

    path = folder / "tiny-gpt2-long"
    return path if (path / "config.json").exists() else build_gpt2(path, positions=1024)


def gpt2_tools_spec(path: Path, parser: str = "hermes") -> dict:
    return {
        "name": MODEL,
        "model": {
            "backend": "transformers",
            "task": "text-generation",
            "path": str(path),
            "max_new_tokens": 96,
            "tool_parser": parser,
        },
        "api": {"kind": "openai"},
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 8},
    }


def tools_handler_spec() -> dict:
    return {
        "name": "tools-llm",
        "handler": str(ROOT / "tests" / "handlers" / "tools_llm.py"),
        "model": {"backend": "python"},
        "api": {"kind": "openai"},
        "devices": {"accelerator": "cpu"},
    }
