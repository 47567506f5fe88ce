"""What the OpenAI routes need from a model, whoever provides it: the built-in transformers
runners, or a user's handler with `complete` / `embed` hooks (the custom contract).

Custom contract (plain functions on the handler module or class, all optional but one):
- `complete(prompt: str, sampling: Sampling) -> Iterator[str]`: text pieces (tokens) for one
  prompt; serves /v1/chat/completions and /v1/completions. Pieces count as tokens for
  `max_tokens`; stop strings are applied for you.
- `render(messages: list[dict]) -> str`: a chat prompt from messages (default: `role: text`
  lines then `assistant:`).
- `count_tokens(text: str) -> int`: for `usage` (default: whitespace-separated words).
- `embed(texts: list[str]) -> list[list[float]]`: serves /v1/embeddings, batched across requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from servectl.runners.generate import RowState, Sampling, generate_steps


def plain_chat(messages: list[dict[str, str]]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


class TransformersLM:
    """The built-in text-generation or feature-extraction runner behind the OpenAI routes."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.max_new_tokens = runner.spec.model.max_new_tokens

    def render(self, messages: list[dict[str, str]]) -> str:
        tokenizer = self.runner.tokenizer
        if getattr(tokenizer, "chat_template", None):
            return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return plain_chat(messages)

    def steps(self, prompts: list[str], settings: list[Sampling]) -> Iterator[list[tuple[str, RowState]]]:
        r = self.runner
        return generate_steps(r.model, r.tokenizer, prompts, settings, r.spec.model.max_length)

    def count(self, texts: list[str]) -> list[int]:
        ids = self.runner.tokenizer(texts, truncation=True, max_length=self.runner.spec.model.max_length)["input_ids"]
        return [len(i) for i in ids]

    @property
    def width(self) -> int:
        return int(self.runner.model.config.hidden_size)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return list(self.runner.predict([(t, {"normalize": True}) for t in texts]))


class HandlerLM:
    """A user's handler with the custom contract behind the OpenAI routes."""

    def __init__(self, handler: Any, max_new_tokens: int) -> None:
        self.handler = handler
        self.max_new_tokens = max_new_tokens
        self.width = int(getattr(handler, "dimensions", 0)) or 1 << 16

    def render(self, messages: list[dict[str, str]]) -> str:
        render = getattr(self.handler, "render", None)
        return str(render(messages)) if render else plain_chat(messages)

    def count(self, texts: list[str]) -> list[int]:
        counter = getattr(self.handler, "count_tokens", None)
        return [int(counter(t)) if counter else len(t.split()) for t in texts]

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in self.handler.embed(texts)]

    def steps(self, prompts: list[str], settings: list[Sampling]) -> Iterator[list[tuple[str, RowState]]]:
        """Round-robin over one `complete` iterator per prompt: one piece each per step."""
        rows = [RowState(s, self.count([p])[0]) for p, s in zip(prompts, settings, strict=True)]
        pieces = [iter(self.handler.complete(p, s)) for p, s in zip(prompts, settings, strict=True)]
        while True:
            step = []
            for row, it in zip(rows, pieces, strict=True):
                step.append((_piece(row, it) if row.finish_reason is None else "", row))
            yield step
            if all(row.finish_reason for row in rows):
                return


def _piece(row: RowState, pieces: Iterator[str]) -> str:
    piece = next(pieces, None)
    if piece is None:
        row.finish_reason = "stop"
        return ""
    row.ids.append(0)  # one piece, one token
    before = len(row.text)
    row.text += piece
    for stop in row.sampling.stop:
        at = row.text.find(stop)
        if at != -1:
            row.text, row.finish_reason = row.text[:at], "stop"
            return row.text[before:]
    if len(row.ids) >= row.sampling.max_tokens:
        row.finish_reason = "length"
    return piece
