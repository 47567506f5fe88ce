"""The OpenAI wire types servectl speaks: requests it validates, answers it documents.

Requests take OpenAI's fields (those of the official document that servectl does not use
are accepted and ignored) and vLLM's extensions; any other field is a 400 naming it, as
OpenAI answers an unrecognized argument. The answer models describe what the adapters
send (they build plain dicts on the hot path); they give the OpenAPI document, and so
generated clients, their types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator, model_validator

from servectl.protocols.openai.structured import StructuredFields
from servectl.protocols.openai.tools import ToolFields


def _defaults_for_nulls(model: type[BaseModel], data: Any) -> Any:
    """An explicit `null` for an optional field means its default, as OpenAI takes it."""
    if not isinstance(data, dict):
        return data
    required = {name for name, f in model.model_fields.items() if f.is_required()}
    return {k: v for k, v in data.items() if v is not None or k in required}


# OpenAI's request fields (openai/openai-openapi, CreateChatCompletionRequest and
# CreateCompletionRequest) that are not modelled here: accepted, and not used
OPENAI_UNUSED = frozenset(
    {"audio", "metadata", "moderation", "parallel_tool_calls", "prediction", "prompt_cache_key"}
    | {"prompt_cache_options", "prompt_cache_retention", "reasoning_effort", "safety_identifier"}
    | {"service_tier", "store", "verbosity", "web_search_options"}
)


def _unsupported(field: str, allowed: str) -> ValueError:
    return ValueError(f"`{field}` is not supported by this server; {allowed}")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown OpenAI fields are accepted and ignored

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _defaults_for_nulls(cls, data)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(_Request):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool", "function"]
    content: str | list[TextPart] | None = Field(None, description="Text, or parts of type `text`.")
    tool_calls: list[dict[str, Any]] | None = Field(None, description="An assistant message's calls, as answered.")
    tool_call_id: str | None = Field(None, description="A `tool` message: the call it answers.")
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, content: Any) -> Any:
        for part in content if isinstance(content, list) else []:
            kind = part.get("type", "untyped") if isinstance(part, dict) else type(part).__name__
            if kind != "text":
                raise _unsupported(f"{kind} content parts", "send text content (a string, or parts of type `text`)")
        return content


class StreamOptions(_Request):
    include_usage: bool = False


class _Strict(_Request):
    """A request whose unknown fields are a 400 naming them (OpenAI's unused ones aside)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _openai_unused(cls, data: Any) -> Any:
        if isinstance(data, dict) and not OPENAI_UNUSED.isdisjoint(data):
            return {k: v for k, v in data.items() if k not in OPENAI_UNUSED or k in cls.model_fields}
        return data


def _vllm(what: str) -> str:
    return f"Extension (vLLM): {what}"


class GenerationRequest(_Strict, StructuredFields):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    seed: int | None = Field(None, ge=-(2**63), lt=2**63 - 16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(None, description="Token id (as a string) -> bias in [-100, 100].")
    top_k: int = Field(0, ge=0, description=_vllm("sample from the k likeliest tokens; 0: all."))
    repetition_penalty: float = Field(1.0, gt=0, le=10, description=_vllm("> 1 discourages repeats."))
    min_tokens: int = Field(
        0, ge=0, description=_vllm("neither the end of text nor a stop string before this many tokens.")
    )
    ignore_eos: bool = Field(False, description=_vllm("go on past the end-of-text token (up to max_tokens)."))
    skip_special_tokens: bool = Field(True, description=_vllm("false keeps special tokens in the text."))
    truncate_prompt_tokens: int | None = Field(
        None,
        ge=-1,
        description=_vllm("keep only the prompt's last k tokens; -1: as many as leave room for max_tokens."),
    )
    prompt_logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description=_vllm(
            "each prompt token's log-probability, rank and the k likeliest tokens at its position, in "
            "`prompt_logprobs` (not with stream)."
        ),
    )
    user: str | None = None

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _keep(cls, keep: int | None) -> int | None:
        if keep == 0:
            raise ValueError("keep at least 1 token (or -1: as many as fit)")
        return keep

    @field_validator("prompt_logprobs")
    @classmethod
    def _not_streamed(cls, k: int | None, info: ValidationInfo) -> int | None:
        if k is not None and info.data.get("stream"):
            raise ValueError("prompt_logprobs are not available with stream: true")
        return k

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop strings")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for token, value in (bias or {}).items():
            if not token.isdigit():
                raise ValueError(f"keys must be token ids, not {token!r}")
            if not -100 <= value <= 100:
                raise ValueError(f"biases must be in [-100, 100], not {value}")
        return bias


class ChatRequest(GenerationRequest, ToolFields):
    messages: list[Message] = Field(min_length=1)
    logprobs: bool = Field(False, description="Return each output token's log-probability.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Also the k likeliest tokens at each position.")
    modalities: list[Literal["text"]] | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, top: int | None, info: ValidationInfo) -> int | None:
        if top is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return top


class CompletionRequest(GenerationRequest):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, a list of token ids, or a list of token-id lists; each is one prompt."
    )
    logprobs: int | None = Field(None, ge=0, le=5, description="Log-probabilities of the k likeliest tokens too.")
    echo: bool = Field(False, description="The prompt before the completion (with logprobs: the prompt's too).")
    suffix: str | None = Field(None, description="Not supported (a 400 when set).")
    best_of: int | None = Field(None, ge=1, le=1, description="Only 1 (the default).")

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, suffix: str | None) -> str | None:
        if suffix:
            raise _unsupported("suffix", "this model only continues a prompt")
        return suffix


class EmbeddingRequest(_Strict):
    model: str
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, a list of texts, a list of token ids, or a list of token-id lists; each is one input."
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


def with_token_range(model: type[_Request], field: str, vocab: int | None) -> type[_Request]:
    """`model` with `field`'s token ids bounded by the vocabulary (so the published schema
    admits only ids the model takes), or without token ids at all for a model with no
    tokenizer (`vocab` None)."""
    if vocab is None:
        narrowed: Any = str | list[str]
    else:
        token = Annotated[int, Field(ge=0, lt=vocab)]
        narrowed = str | list[str] | list[token] | list[list[token]]
    original = model.model_fields[field]
    return create_model(  # type: ignore[no-any-return,call-overload]
        model.__name__, __base__=model, **{field: (narrowed, Field(description=original.description))}
    )


# --- answers -------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="The arguments, as a JSON text.")


class ToolCallOut(BaseModel):
    id: str = Field(description="`call_...`: a `tool` message answering it names it.")
    type: Literal["function"]
    function: FunctionCall


class ToolCallDelta(ToolCallOut):
    index: int = Field(description="Which call of the choice (a streamed call comes whole, in one delta).")


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None = Field(description="null when the answer is tool calls only.")
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = None
    function_call: FunctionCall | None = Field(None, description="Deprecated: asked with `functions`.")


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


_PROMPT_LOGPROBS = _vllm(
    "with `prompt_logprobs`: per prompt token (null for the first), {token id: {logprob, rank, decoded_token}}."
)


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_logprobs: list[dict[str, Any] | None] | None = Field(None, description=_PROMPT_LOGPROBS)


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    function_call: FunctionCall | None = Field(None, description="Deprecated: asked with `functions`.")


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event of a streamed chat completion; the last may carry only `usage`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None
    prompt_logprobs: list[dict[str, Any] | None] | None = Field(None, description=_PROMPT_LOGPROBS)


class Completion(BaseModel):
    """A text completion, whole or one streamed event (then `usage` comes only last)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32s.")


class EmbeddingResponse(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage
