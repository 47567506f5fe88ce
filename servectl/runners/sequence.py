"""One sequence being generated: its settings, its tokens, its text as it may be sent.

Shared by the token engines (transformers) and the piece engine (a handler's `complete`):
text arrives in pieces, stop strings are looked for in the tail only, and `take()` hands out
what can no longer turn into a stop string or a half-decoded character.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from servectl.sdk import Sampling, ToolCall

Prompt = str | list[int]  # text, or token ids


@dataclass(slots=True)
class Candidate:
    """A token at one position: its id, text (decoded alone), log-probability and bytes."""

    id: int
    token: str
    logprob: float
    bytes: bytes


@dataclass(slots=True)
class TokenLogprob:
    """One token's log-probability and rank at its position, and the likeliest alternatives
    there. `bytes` is what the token adds to the text (none for a special one it skips).
    A prompt's first token has no log-probability (None, rank 0)."""

    id: int
    token: str
    logprob: float | None
    bytes: bytes
    rank: int
    top: list[Candidate]


@dataclass
class Sequence:
    """A generation in progress: the engine appends to it, the protocol reads from it."""

    sampling: Sampling
    prompt: list[int]  # token ids (a piece engine's are empty: it has `prompt_text`)
    prompt_tokens: int
    prompt_text: str = ""
    ids: list[int] = field(default_factory=list)  # generated tokens (a piece counts as one)
    text: str = ""
    sent: int = 0  # characters of `text` already handed out
    finish_reason: str | None = None  # "stop", "length"; "cancelled" when removed, "error" with `error`
    error: BaseException | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # when sampling.logprobs is set
    logprobs_sent: int = 0
    prompt_logprobs: list[TokenLogprob] | None = None  # when sampling.prompt_logprobs is set
    generator: Any = None  # a seeded torch.Generator
    state: Any = None  # the engine's own (a detokenizer, or a `complete` iterator)
    reported: bool = False  # the protocol has sent its finish_reason
    grammar: Any = None  # a RowGrammar (runners.grammar) when its output is constrained
    tool_calls: list[ToolCall] = field(default_factory=list)  # what a `complete` hook yielded as calls

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.finish_reason, self.error = "error", exc

    def extend(self, piece: str) -> None:
        """Append decoded text; end the sequence at a stop string or its token budget."""
        before = len(self.text)
        self.text += piece
        if piece and self.sampling.stop and len(self.ids) >= self.sampling.min_tokens:
            longest = max(len(s) for s in self.sampling.stop)
            start = max(0, before - longest + 1)
            hits = [at for s in self.sampling.stop if (at := self.text.find(s, start)) != -1]
            if hits:
                self.text = self.text[: min(hits)]
                self.finish_reason = "stop"
                return
        if len(self.ids) >= self.sampling.max_tokens:
            self.finish_reason = "length"

    def take(self) -> str:
        """The text not handed out yet that is safe to send: all of it once finished, else
        without what could still become a stop string or is a half-decoded character."""
        end = len(self.text)
        if not self.done:
            end -= max((len(s) - 1 for s in self.sampling.stop), default=0)
            if self.text.endswith("\ufffd"):
                end = min(end, len(self.text) - 1)
        if end <= self.sent:
            return ""
        new, self.sent = self.text[self.sent : end], end
        return new

    def take_logprobs(self) -> list[TokenLogprob]:
        new = self.logprobs[self.logprobs_sent :]
        self.logprobs_sent = len(self.logprobs)
        return new
