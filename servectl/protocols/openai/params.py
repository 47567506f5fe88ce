"""An OpenAI generation request turned into what the engine runs: prompts and `Sampling`.

Every check of a parameter's value lives here, and raises `InvalidInput` with status 400
naming the parameter (the SDKs raise `BadRequestError` for those).
"""

from __future__ import annotations

from servectl.protocols.openai.schemas import CompletionRequest, GenerationRequest
from servectl.sdk import Sampling

Prompt = str | list[int]  # text, or token ids


def sampling_of(request: GenerationRequest, default_max_tokens: int) -> Sampling:
    """The request's sampling settings, defaults filled in."""
    limit = request.max_completion_tokens or request.max_tokens or default_max_tokens
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    return Sampling(
        max_tokens=limit, temperature=request.temperature, top_p=request.top_p, seed=request.seed, stop=stop
    )


def prompts_of(request: CompletionRequest) -> list[Prompt]:
    """A completion request's prompts: one per string or token-id list it carries."""
    return [request.prompt]
