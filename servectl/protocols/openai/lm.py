"""What the OpenAI routes need from a model, whoever provides it: the built-in transformers
runners, or a user's handler with `complete` / `embed` hooks (the custom contract).

The custom contract is declared in `servectl.sdk` (`OpenAIHandler`: complete, render,
count_tokens; `EmbedHandler`: embed): all optional but one, looked up once here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from servectl.runners.generate import RowState, Sampling, generate_steps


def plain_chat(messages: list[dict[str, str]]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


class LanguageModel(Protocol):
    """What the OpenAI adapters call, whoever provides the model."""

    max_new_tokens: int

    @property
    def width(self) -> int: ...
    def render(self, messages: list[dict[str, str]]) -> str: ...
    def steps(self, prompts: list[str], settings: list[Sampling]) -> Iterator[list[tuple[str, RowState]]]: ...
    def count(self, texts: list[str]) -> list[int]: ...
    def embed(self, texts: list[str]) -> list[list[float]]: ...


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
        self.max_new_tokens = max_new_tokens
        self._width = int(getattr(handler, "dimensions", 0)) or 1 << 16
        self._complete = _hook(handler, "complete")
        self._render = _hook(handler, "render")
        self._count = _hook(handler, "count_tokens")
        self._embed = _hook(handler, "embed")
        self.generates = self._complete is not None
        self.embeds = self._embed is not None

    @property
    def width(self) -> int:
        return self._width

    def render(self, messages: list[dict[str, str]]) -> str:
        return str(self._render(messages)) if self._render else plain_chat(messages)

    def count(self, texts: list[str]) -> list[int]:
        return [int(self._count(t)) if self._count else len(t.split()) for t in texts]

    def embed(self, texts: list[str]) -> list[list[float]]:
        assert self._embed is not None  # only the embeddings adapter calls it, made when it exists
        return [list(map(float, v)) for v in self._embed(texts)]

    def steps(self, prompts: list[str], settings: list[Sampling]) -> Iterator[list[tuple[str, RowState]]]:
        """Round-robin over one `complete` iterator per prompt: one piece each per step."""
        rows = [RowState(s, self.count([p])[0]) for p, s in zip(prompts, settings, strict=True)]
        pieces = [iter(self._complete(p, s)) for p, s in zip(prompts, settings, strict=True)]
        while True:
            step = []
            for row, it in zip(rows, pieces, strict=True):
                step.append((_piece(row, it) if row.finish_reason is None else "", row))
            yield step
            if all(row.finish_reason for row in rows):
                return


def _hook(handler: Any, name: str) -> Any:
    fn = getattr(handler, name, None)
    return fn if callable(fn) else None


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
