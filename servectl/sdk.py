"""What handler authors import: markers for streams and batches, the one error a hook may
raise on purpose, and the hook sets as `typing.Protocol`s (for editors and type checkers;
no base class is needed: any module, class or object with the hooks serves).

Everything else in servectl is internal and may change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "END",
    "Chunks",
    "Constraint",
    "EmbedHandler",
    "Final",
    "InvalidInput",
    "Many",
    "OpenAIHandler",
    "PredictHandler",
    "ResponseFormat",
    "Sampling",
    "StreamingHandler",
    "Tool",
    "ToolCall",
]


class InvalidInput(ValueError):
    """Raised by `decode` (or `predict`) for input that does not fit the model: the request
    gets a 422 naming `field` (or the status given, e.g. 404 for an unknown model name)."""

    def __init__(self, message: str, field: str = "inputs", status: int = 422, code: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.status = status
        self.code = code  # a machine-readable kind (OpenAI's `code`), e.g. "context_length_exceeded"


class _End:
    __slots__ = ()

    def __repr__(self) -> str:
        return "servectl.END"

    def __reduce__(self) -> str:
        return "END"  # one END per process, also after a pickle round trip


END: Any = _End()
"""Yield this in a streaming `predict` step, in a request's place, to end that request's stream."""


class Chunks(list[Any]):
    """Several chunks for one request in one streaming step (END may close the list);
    `tokens`: tokens generated for it, `prompt_tokens`: its prompt's (say them once),
    counted in /metrics and /stats and charged to its key's rate limit."""

    def __init__(self, chunks: Iterable[Any] = (), tokens: int = 0, prompt_tokens: int = 0) -> None:
        super().__init__(chunks)
        self.tokens = tokens
        self.prompt_tokens = prompt_tokens


class Final:
    """A whole (non-streamed) answer with its token counts: a streaming step's entry, or
    what `encode` returns when the answer's tokens should be counted (as for Chunks)."""

    __slots__ = ("prompt_tokens", "tokens", "value")

    def __init__(self, value: Any, tokens: int = 0, prompt_tokens: int = 0) -> None:
        self.value = value
        self.tokens = tokens
        self.prompt_tokens = prompt_tokens


class Many(list[Any]):
    """What `decode` returns for a request that carries several items (e.g. a list of texts).

    Each item counts toward `max_batch_size`; `encode` gets the list of their outputs.
    """


@dataclass(slots=True)
class Tool:
    """A function the client offers the model (OpenAI's `tools[].function`, or a legacy
    `functions[]` entry): `parameters` is its arguments' JSON schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False


@dataclass(slots=True)
class ToolCall:
    """A call of one of the offered tools. A `complete` hook may yield one (between or instead
    of text pieces): the answer then carries it in `tool_calls` (id `call_...` given when
    empty) and ends with finish_reason `tool_calls`. `arguments`: a JSON text or a dict."""

    name: str
    arguments: str | dict[str, Any] = "{}"
    id: str = ""


@dataclass(slots=True)
class ResponseFormat:
    """What the client asked the text to be: `type` `text`, `json_object`, `json_schema`
    (`schema`, `name`, `strict`) or servectl's `regex` (`regex`)."""

    type: str = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool = False
    regex: str | None = None


@dataclass(slots=True)
class Constraint:
    """What a row's output must match; the token engine masks every token that would leave
    it. `kind`: `json` (`value` a JSON schema), `regex`, `choice` (a list of texts) or
    `grammar` (Lark, or GBNF). `param`: the request field blamed when it does not compile;
    `strict`: unsupported schema keywords are an error (else ignored)."""

    kind: Literal["json", "regex", "choice", "grammar"]
    value: Any
    param: str = "response_format"
    strict: bool = True


@dataclass
class Sampling:
    """One generation's settings, as an OpenAI request gave them (defaults filled in).

    `temperature` 0 is greedy. `top_k` 0 and penalties at their neutral values are off.
    `logprobs` None returns none; k >= 0 returns the chosen token's log-probability and
    the k most likely alternatives at each step; `prompt_logprobs` the same for each prompt
    token after the first. vLLM's extensions: no end of text nor stop string before
    `min_tokens`; `ignore_eos` generates past the end-of-text token; `skip_special_tokens`
    false keeps special tokens in the text; `truncate_prompt_tokens` keeps a prompt's last k.
    Structured outputs and tools: the `response_format` and `tools` the client sent (with
    `tool_choice`, `tool_name` when one function is named, `parallel_tool_calls`); the token
    engine decodes under `constraint` (a custom `complete` may honour it, or not)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    top_k: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    truncate_prompt_tokens: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] = "auto"
    tool_name: str | None = None
    parallel_tool_calls: bool = True
    constraint: Constraint | None = None


# --- the hook sets --------------------------------------------------------------------
# Every hook is optional; a handler defines at least one of predict, decode, encode (or, for
# `api.kind: openai`, complete or embed). `setup` may take (device, spec), (device) or ().


@runtime_checkable
class PredictHandler(Protocol):
    """The request/response contract: decode each request, predict a batch, encode each output."""

    def setup(self, device: str, spec: Any) -> None: ...
    def decode(self, request: Any) -> Any: ...
    def batch(self, items: list[Any]) -> Any: ...
    def predict(self, batch: Any) -> Any: ...
    def unbatch(self, output: Any) -> Iterable[Any]: ...
    def encode(self, output: Any) -> Any: ...


class StreamingHandler(Protocol):
    """A streaming `predict`: one list per step with, per request, a chunk, None (nothing
    this step), END, `Chunks(...)` or `Final(value)`. (A generator `encode` streams too.)"""

    def predict(self, batch: list[Any]) -> Iterator[list[Any]]: ...


class OpenAIHandler(Protocol):
    """`api.kind: openai` with your own generator: `complete` serves /v1/chat/completions and
    /v1/completions (each piece counts as one token for `max_tokens`; stop strings are
    applied for you); `render` makes a prompt of chat messages (default `role: text` lines,
    then `assistant:`); `count_tokens` feeds `usage` (default: words). `sampling` carries
    the request's `tools` and `response_format`; `complete` may yield `ToolCall`s (the
    answer's `tool_calls`, finish_reason `tool_calls`)."""

    def complete(self, prompt: str, sampling: Sampling) -> Iterable[str | ToolCall]: ...
    def render(self, messages: list[dict[str, str]]) -> str: ...
    def count_tokens(self, text: str) -> int: ...


class EmbedHandler(Protocol):
    """`api.kind: openai` embeddings: serves /v1/embeddings, batched across requests;
    `dimensions` (optional) is the vector width."""

    def embed(self, texts: list[str]) -> list[list[float]]: ...
