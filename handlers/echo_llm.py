"""A custom model behind the OpenAI routes (`api.kind: openai`, `model.backend: python`).

A toy "language model" that answers by echoing the last user message word by word, and a
hashing "embedding": enough to show the contract (`servectl.sdk.OpenAIHandler` and
`EmbedHandler`) with real streaming,
stop strings, usage counts and batching, and nothing to download.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator

from servectl.sdk import Sampling

dimensions = 32


def render(messages: list[dict[str, str]]) -> str:
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"You said: {last}"


def complete(prompt: str, sampling: Sampling) -> Iterator[str]:
    """One word at a time, as a real model yields tokens."""
    for i, word in enumerate(prompt.split()):
        time.sleep(0.005)
        yield word if i == 0 else " " + word


def count_tokens(text: str) -> int:
    return len(text.split())


def embed(texts: list[str]) -> list[list[float]]:
    out = []
    for text in texts:
        digest = hashlib.sha256(text.encode()).digest()
        vec = [(b - 127.5) / 127.5 for b in digest[:dimensions]]
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        out.append([v / norm for v in vec])
    return out
