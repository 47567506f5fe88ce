"""An OpenAI generation request turned into what the engine runs: prompts and `Sampling`.

The request models (`schemas.py`) check each value's type and range; what needs two fields
or the model is checked here and raises `InvalidInput` with status 400 naming the parameter.
"""

from __future__ import annotations

from servectl.protocols.openai.schemas import ChatRequest, CompletionRequest, GenerationRequest
from servectl.runners.sequence import Prompt
from servectl.sdk import InvalidInput, Sampling

__all__ = ["Prompt", "prompts_of", "sampling_of", "texts_or_ids"]


def sampling_of(request: GenerationRequest, default_max_tokens: int) -> Sampling:
    """The request's sampling settings, defaults filled in."""
    limit = request.max_completion_tokens or request.max_tokens or default_max_tokens
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    logprobs: int | None = None
    prompt_logprobs = request.prompt_logprobs
    if isinstance(request, ChatRequest) and request.logprobs:
        logprobs = request.top_logprobs or 0
    elif isinstance(request, CompletionRequest):
        logprobs = request.logprobs
        if request.echo and logprobs is not None:  # the prompt's tokens come back scored too
            prompt_logprobs = max(logprobs, prompt_logprobs or 0)
    if request.min_tokens > limit:
        raise InvalidInput(f"min_tokens ({request.min_tokens}) must not exceed max_tokens ({limit})", "min_tokens", 400)
    return Sampling(
        max_tokens=limit,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=stop,
        top_k=request.top_k,
        repetition_penalty=request.repetition_penalty,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        logit_bias={int(token): bias for token, bias in (request.logit_bias or {}).items()},
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        min_tokens=request.min_tokens,
        ignore_eos=request.ignore_eos,
        skip_special_tokens=request.skip_special_tokens,
        truncate_prompt_tokens=request.truncate_prompt_tokens,
    )


def prompts_of(request: CompletionRequest) -> list[Prompt]:
    """A completion request's prompts: one per string or token-id list it carries."""
    return texts_or_ids(request.prompt, "prompt")


def texts_or_ids(value: str | list[str] | list[int] | list[list[int]], field: str) -> list[Prompt]:
    """A `prompt` or `input` as OpenAI takes it: a text, texts, token ids (a flat list is one
    entry) or lists of token ids; each is one entry. Empty ones are a 400 naming `field`."""
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidInput(f"{field} must not be empty: send a text, texts, token ids or lists of them", field, 400)
    if all(isinstance(v, int) for v in value):
        return [list(value)]  # type: ignore[arg-type]
    if any(isinstance(v, list) and not v for v in value):
        raise InvalidInput(f"a token-id {field} must not be empty", field, 400)
    return list(value)  # type: ignore[arg-type]
