"""`/v1/chat/completions` and `/v1/completions` over a language model's engine.

Each request becomes a job: a sequence per prompt and choice, each with its own sampling,
joining the engine's running batch (continuous batching); after every step the job says
what to send: stream chunks (text, finish reasons, log-probabilities, usage last) or, for a
client that did not ask to stream, the whole answer once every choice is done.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from servectl.protocols.openai.lm import LanguageModel
from servectl.protocols.openai.params import prompts_of, sampling_of
from servectl.protocols.openai.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Completion,
    CompletionRequest,
    GenerationRequest,
    TextPart,
    with_token_range,
)
from servectl.runners.engine import Engine
from servectl.runners.sequence import Prompt, Sequence, TokenLogprob
from servectl.sdk import END, Chunks, Final, InvalidInput


def _text(content: str | list[TextPart] | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content)
    return content or ""


@dataclass(slots=True)
class Decoded:
    """A generation request, checked: a sequence per prompt and choice, in choice order."""

    request: GenerationRequest
    seqs: list[Sequence]


class _Generation:
    """What chat and completions share: sequences per request, and their answers after
    every step of the engine that runs them."""

    kind = "text_completion"
    response_model: type[BaseModel] = Completion  # documented answer types (OpenAPI, clients)
    chunk_model: type[BaseModel] = Completion
    field = "prompt"  # the parameter a too-long prompt is blamed on
    invalid_status = 400  # OpenAI answers invalid parameters with a 400

    def __init__(self, lm: LanguageModel, model_name: str) -> None:
        self.lm = lm
        self.model_name = model_name
        self.example = {"model": model_name, **self.example_body, "max_tokens": 16}

    example_body: ClassVar[dict[str, Any]] = {"prompt": "Once upon a time"}

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise InvalidInput(
                f"The model `{model}` does not exist; this server serves `{self.model_name}`", "model", status=404
            )

    def prompts(self, request: Any) -> list[Prompt]:
        raise NotImplementedError

    def decode_request(self, request: GenerationRequest) -> Decoded:
        self.check_model(request.model)
        asked = request.max_completion_tokens is not None or request.max_tokens is not None
        seqs = []
        for prompt in self.prompts(request):
            for choice in range(request.n):
                sampling = sampling_of(request, self.lm.max_new_tokens)
                if sampling.seed is not None:
                    sampling.seed += choice
                seqs.append(self.lm.sequence(prompt, sampling, asked, self.field))
        return Decoded(request, seqs)

    def generation_job(self, decoded: Decoded) -> GenerationJob:
        return GenerationJob(self, decoded, self.lm.engine)

    def chunk(self, cid: str, created: int, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": cid,
            "object": f"{self.kind}.chunk" if self.kind == "chat.completion" else self.kind,
            "created": created,
            "model": self.model_name,
            "choices": choices,
        }

    def delta_choice(self, index: int, text: str, finish: str | None, logprobs: list[TokenLogprob] | None) -> Any:
        raise NotImplementedError

    def whole_choice(self, index: int, seq: Sequence) -> dict[str, Any]:
        raise NotImplementedError


class GenerationJob:
    """One request's sequences in the engine; after each step, the chunks (or the whole
    answer) they make."""

    def __init__(self, adapter: _Generation, decoded: Decoded, engine: Engine) -> None:
        self.adapter = adapter
        self.request = decoded.request
        self.seqs = decoded.seqs
        self.engine = engine
        self.id = f"{adapter.kind}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        engine.add(self.seqs)

    def close(self) -> None:
        self.engine.remove(self.seqs)

    def progress(self) -> Any:
        finished = all(seq.done for seq in self.seqs)
        for seq in self.seqs:
            if seq.error is not None:
                raise seq.error
        tokens = sum(len(seq.ids) for seq in self.seqs) if finished else 0
        prompt = self._prompt_tokens() if finished else 0
        if not self.request.stream:
            return Final(self._whole(), tokens, prompt) if finished else None
        a = self.adapter
        choices = []
        for index, seq in enumerate(self.seqs):
            text = seq.take()
            finish = seq.finish_reason if seq.done and not seq.reported else None
            if text or finish:
                seq.reported = seq.reported or finish is not None
                logprobs = seq.take_logprobs() if seq.sampling.logprobs is not None else None
                choices.append(a.delta_choice(index, text, finish, logprobs))
        out: list[Any] = [a.chunk(self.id, self.created, choices)] if choices else []
        if finished:
            options = self.request.stream_options
            if options and options.include_usage:
                out.append({**a.chunk(self.id, self.created, []), "usage": self._usage()})
            out.append(END)
        return Chunks(out, tokens, prompt) if out else None

    def _prompt_tokens(self) -> int:
        return sum(seq.prompt_tokens for seq in self.seqs[:: self.request.n])

    def _usage(self) -> dict[str, int]:
        prompt = self._prompt_tokens()
        completion = sum(len(seq.ids) for seq in self.seqs)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _whole(self) -> dict[str, Any]:
        """The non-streamed answer: every choice, and usage."""
        return {
            "id": self.id,
            "object": self.adapter.kind,
            "created": self.created,
            "model": self.adapter.model_name,
            "choices": [self.adapter.whole_choice(i, seq) for i, seq in enumerate(self.seqs)],
            "usage": self._usage(),
        }


class ChatCompletions(_Generation):
    kind = "chat.completion"
    response_model = ChatCompletion
    chunk_model = ChatCompletionChunk
    field = "messages"
    example_body: ClassVar[dict[str, Any]] = {"messages": [{"role": "user", "content": "Say hello."}]}

    def decode(self, request: ChatRequest) -> Decoded:
        return self.decode_request(request)

    def prompts(self, request: ChatRequest) -> list[Prompt]:
        return [str(self.lm.render([{"role": m.role, "content": _text(m.content)} for m in request.messages]))]

    def delta_choice(self, index: int, text: str, finish: str | None, logprobs: list[TokenLogprob] | None) -> Any:
        delta = {"role": "assistant", "content": text} if text else {}
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": _chat_logprobs(logprobs)}

    def whole_choice(self, index: int, seq: Sequence) -> dict[str, Any]:
        return {
            "index": index,
            "message": {"role": "assistant", "content": seq.text},
            "finish_reason": seq.finish_reason,
            "logprobs": _chat_logprobs(seq.logprobs if seq.sampling.logprobs is not None else None),
        }


class Completions(_Generation):
    kind = "text_completion"

    def __init__(self, lm: LanguageModel, model_name: str) -> None:
        super().__init__(lm, model_name)
        self.request_model = with_token_range(CompletionRequest, "prompt", lm.vocab)

    def decode(self, request: CompletionRequest) -> Decoded:
        return self.decode_request(request)

    def prompts(self, request: CompletionRequest) -> list[Prompt]:
        return prompts_of(request)

    def delta_choice(self, index: int, text: str, finish: str | None, logprobs: list[TokenLogprob] | None) -> Any:
        return {"index": index, "text": text, "finish_reason": finish, "logprobs": _completion_logprobs(logprobs)}

    def whole_choice(self, index: int, seq: Sequence) -> dict[str, Any]:
        logprobs = seq.logprobs if seq.sampling.logprobs is not None else None
        return {
            "index": index,
            "text": seq.text,
            "finish_reason": seq.finish_reason,
            "logprobs": _completion_logprobs(logprobs),
        }


def _chat_logprobs(entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """Chat's `logprobs`: per token, its text, log-probability, UTF-8 bytes and alternatives."""
    if entries is None:
        return None

    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    content = [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]} for e in entries]
    return {"content": content, "refusal": None}


def _completion_logprobs(entries: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """Completions' legacy `logprobs`: parallel lists, alternatives as {token: logprob}."""
    if entries is None:
        return None
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [dict(e.top) for e in entries],
        "text_offset": offsets,
    }
