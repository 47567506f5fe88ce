"""What the OpenAI routes need from a model, whoever provides it: the built-in transformers
runners, or a user's handler with `complete` / `embed` hooks (the custom contract).

The custom contract is declared in `servectl.sdk` (`OpenAIHandler`: complete, render,
count_tokens; `EmbedHandler`: embed): all optional but one, looked up once here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from servectl.protocols.openai.tools import render_plain, template_messages
from servectl.runners.engine import Engine
from servectl.runners.grammar import Grammars
from servectl.runners.sequence import Prompt, Sequence
from servectl.sdk import InvalidInput, Sampling, ToolCall


def plain_chat(messages: list[dict[str, str]]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


class LanguageModel(Protocol):
    """What the OpenAI adapters call, whoever provides the model."""

    max_new_tokens: int

    @property
    def context(self) -> int | None:
        """Tokens a prompt and its completion may hold together; None: unknown."""

    @property
    def engine(self) -> Engine: ...
    @property
    def vocab(self) -> int | None:
        """Token ids it takes are below this; None: it takes none (no tokenizer)."""

    @property
    def width(self) -> int: ...
    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, parser: str = "hermes"
    ) -> str:
        """A chat prompt; `tools` (OpenAI's shape) offered in the parser's call format."""

    def sequence(self, prompt: Prompt, sampling: Sampling, asked: bool = True, field: str = "prompt") -> Sequence: ...
    def text_of(self, ids: list[int]) -> str:
        """Token ids as text (an echoed prompt given as ids, or truncated)."""

    def count(self, texts: list[str]) -> list[int]: ...
    def embed(self, texts: list[str]) -> list[list[float]]: ...
    def embed_ids(self, ids: list[list[int]]) -> list[list[float]]: ...


class TransformersLM:
    """The built-in text-generation or feature-extraction runner behind the OpenAI routes."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.max_new_tokens = runner.spec.model.max_new_tokens
        self.context = runner.context
        self.engine: Any = getattr(runner, "engine", None)  # text-generation only
        self.vocab: int | None = int(runner.model.get_input_embeddings().num_embeddings)
        self.grammars = Grammars(runner.tokenizer, self.vocab)  # constrained decoding, set up on first use

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, parser: str = "hermes"
    ) -> str:
        tokenizer = self.runner.tokenizer
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(
                template_messages(messages), tools=tools or None, tokenize=False, add_generation_prompt=True
            )
            return str(prompt)
        return render_plain(messages, tools, parser)

    def sequence(self, prompt: Prompt, sampling: Sampling, asked: bool = True, field: str = "prompt") -> Sequence:
        """The runner's sequence; a constrained one gets its grammar (a 400 if it does not compile)."""
        seq: Sequence = self.runner.sequence(prompt, sampling, asked, field)
        if sampling.constraint is not None:
            seq.grammar = self.grammars.row(sampling.constraint)
        return seq

    def text_of(self, ids: list[int]) -> str:
        return str(self.runner.tokenizer.decode(ids))

    def count(self, texts: list[str]) -> list[int]:
        return [len(i) for i in self.runner.tokenizer(texts)["input_ids"]] if texts else []

    @property
    def width(self) -> int:
        return int(self.runner.model.config.hidden_size)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return list(self.runner.predict([(t, {"normalize": True}) for t in texts]))

    def embed_ids(self, ids: list[list[int]]) -> list[list[float]]:
        vocab = self.runner.model.get_input_embeddings().num_embeddings
        if any(not 0 <= i < vocab for row in ids for i in row):
            raise InvalidInput(f"token ids must be in [0, {vocab})", "input", status=400)
        tokens = self.runner.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.runner.device)
        return list(self.runner.pool(tokens, [True] * len(ids)))


class HandlerLM:
    """A user's handler with the custom contract behind the OpenAI routes."""

    context: int | None = None
    vocab: int | None = None

    def __init__(self, handler: Any, max_new_tokens: int, max_rows: int) -> None:
        self.max_new_tokens = max_new_tokens
        self._width = int(getattr(handler, "dimensions", 0)) or 1 << 16
        self._complete = _hook(handler, "complete")
        self._render = _hook(handler, "render")
        self._count = _hook(handler, "count_tokens")
        self._embed = _hook(handler, "embed")
        self.generates = self._complete is not None
        self.embeds = self._embed is not None
        self.engine = PieceEngine(self._complete, max_rows)

    @property
    def width(self) -> int:
        return self._width

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, parser: str = "hermes"
    ) -> str:
        """The handler's `render` (it finds the tools in `complete`'s sampling), or the built-in."""
        return str(self._render(messages)) if self._render else render_plain(messages, tools, parser)

    def count(self, texts: list[str]) -> list[int]:
        return [int(self._count(t)) if self._count else len(t.split()) for t in texts]

    def embed(self, texts: list[str]) -> list[list[float]]:
        assert self._embed is not None  # only the embeddings adapter calls it, made when it exists
        return [list(map(float, v)) for v in self._embed(texts)]

    def embed_ids(self, ids: list[list[int]]) -> list[list[float]]:
        raise InvalidInput("token-id inputs need a model with a tokenizer; send text", "input", status=400)

    def sequence(self, prompt: Prompt, sampling: Sampling, asked: bool = True, field: str = "prompt") -> Sequence:
        if not isinstance(prompt, str):
            raise InvalidInput("token-id prompts need a model with a tokenizer; send text", field, status=400)
        for name in ("logprobs", "prompt_logprobs", "truncate_prompt_tokens"):
            if getattr(sampling, name) is not None:
                msg = f"this model's `complete` takes no tokens nor gives log-probabilities; leave {name} unset"
                raise InvalidInput(msg, name, 400)
        return Sequence(sampling, [], self.count([prompt])[0], prompt_text=prompt)

    def text_of(self, ids: list[int]) -> str:
        raise InvalidInput("token-id prompts need a model with a tokenizer; send text", "prompt", status=400)


class PieceEngine:
    """Continuous batching for a handler's `complete`: one iterator per sequence, one piece
    (one token) each per step; sequences join and leave between steps, `max_rows` at most
    running. A failing iterator fails its own sequence only."""

    def __init__(self, complete: Any, max_rows: int) -> None:
        self.complete = complete
        self.max_rows = max_rows
        self.running: list[Sequence] = []
        self.waiting: deque[Sequence] = deque()

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def add(self, seqs: list[Sequence]) -> None:
        self.waiting.extend(seqs)

    def remove(self, seqs: Iterable[Sequence]) -> None:
        for seq in seqs:
            if not seq.done:
                seq.finish_reason = "cancelled"
        self._leave()

    def step(self) -> None:
        while self.waiting and len(self.running) < self.max_rows:
            seq = self.waiting.popleft()
            if seq.done:
                continue
            try:
                seq.state = iter(self.complete(seq.prompt_text, seq.sampling))
            except Exception as exc:
                seq.fail(exc)
                continue
            self.running.append(seq)
        for seq in self.running:
            try:
                piece = next(seq.state, None)
            except Exception as exc:
                seq.fail(exc)
                continue
            if piece is None:
                seq.finish_reason = "stop"
                continue
            seq.ids.append(0)  # one piece, one token
            if isinstance(piece, ToolCall):
                seq.tool_calls.append(piece)
                continue
            seq.extend(str(piece))
        self._leave()

    def _leave(self) -> None:
        for seq in self.running:
            if seq.done and hasattr(seq.state, "close"):
                seq.state.close()  # a generator's `finally` runs now
        self.running = [seq for seq in self.running if not seq.done]
        self.waiting = deque(seq for seq in self.waiting if not seq.done)


def _hook(handler: Any, name: str) -> Any:
    fn = getattr(handler, name, None)
    return fn if callable(fn) else None
