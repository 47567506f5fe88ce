"""Log-probabilities in OpenAI's two shapes (chat's `content`, completions' parallel lists)
and vLLM's `prompt_logprobs`.

A token's `bytes` are its own (a token inside a UTF-8 character has only part of it), so
the bytes of an answer's tokens make its text; `text_offset` counts characters of the text,
and a token that continues a character sits at that character's start.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from typing import Any

from servectl.runners.sequence import TokenLogprob


class TextOffsets:
    """Where each next token starts in a text, in characters (one per choice, kept across
    a stream's chunks). Bytes that never make a character show as U+FFFD in the text; a
    token after them starts there."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.at = 0

    def next(self, data: bytes) -> int:
        here = self.at
        self.at += len(self.decoder.decode(data))
        return here


def chat_logprobs(entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """Chat's `logprobs`: per token, its text, log-probability, bytes and alternatives."""
    if entries is None:
        return None
    content = [
        {
            "token": e.token,
            "logprob": e.logprob,
            "bytes": list(e.bytes),
            "top_logprobs": [{"token": c.token, "logprob": c.logprob, "bytes": list(c.bytes)} for c in e.top],
        }
        for e in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: Iterable[TokenLogprob], k: int, offsets: TextOffsets) -> dict[str, Any]:
    """Completions' legacy `logprobs`: parallel lists; each position's `top_logprobs` holds
    the k likeliest tokens and the chosen one (k + 1 at most, as OpenAI's); an echoed
    prompt's first token has neither log-probability nor alternatives (null)."""
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    at: list[int] = []
    for e in entries:
        tokens.append(e.token)
        values.append(e.logprob)
        at.append(offsets.next(e.bytes))
        top = None if e.logprob is None else {c.token: c.logprob for c in e.top[:k]}
        if top is not None and e.logprob is not None:
            top[e.token] = e.logprob  # the chosen one's, where alternatives share its text
        tops.append(top)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": at}


def vllm_prompt_logprobs(entries: list[TokenLogprob] | None, k: int) -> list[dict[str, Any] | None] | None:
    """vLLM's `prompt_logprobs`: per prompt token (None for the first), the token and the k
    likeliest at its position, by token id: {logprob, rank, decoded_token}."""
    if entries is None:
        return None
    out: list[dict[str, Any] | None] = []
    for e in entries:
        if e.logprob is None:
            out.append(None)
            continue
        scored = {
            str(c.id): {"logprob": c.logprob, "rank": r, "decoded_token": c.token} for r, c in enumerate(e.top[:k], 1)
        }
        scored[str(e.id)] = {"logprob": e.logprob, "rank": e.rank, "decoded_token": e.token}
        out.append(scored)
    return out
