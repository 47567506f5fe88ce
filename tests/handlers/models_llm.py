"""An OpenAI-kind test handler that says which model answers: served twice under two names,
its answers show that the shared `/v1/...` routes pick the model by the body's `model`.

`complete` yields `[NAME]` and then the prompt's words (chat: the last user message's);
`embed` returns [characters of the text, the worker's pid] (a test finds the worker by it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from servectl.sdk import Sampling

dimensions = 2
_me = {"name": "?"}


def setup(device: str, spec: Any) -> None:
    _me["name"] = spec.name


def render(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def complete(prompt: str, sampling: Sampling) -> Iterator[str]:
    yield f"[{_me['name']}]"
    for word in prompt.split():
        yield " " + word


def count_tokens(text: str) -> int:
    return len(text.split())


def embed(texts: list[str]) -> list[list[float]]:
    return [[float(len(text)), float(os.getpid())] for text in texts]
