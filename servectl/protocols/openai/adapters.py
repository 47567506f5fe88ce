"""OpenAI-compatible routes over the built-in transformers runners.

`/v1/chat/completions` and `/v1/completions` over text-generation (real token streaming,
per-request sampling, stop strings, n, usage from token ids), `/v1/embeddings` over
feature-extraction (batched across requests like any other items).
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import BaseModel

from servectl.protocols.openai.lm import LanguageModel
from servectl.protocols.openai.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    GenerationRequest,
)
from servectl.runners.generate import RowState, Sampling
from servectl.sdk import END, Chunks, Final, InvalidInput, Many


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content)
    return content or ""


class _Generation:
    """What chat and completions share: the request item, the step loop, the answers."""

    kind = "text_completion"
    response_model: type[BaseModel] = Completion  # documented answer types (OpenAPI, clients)
    chunk_model: type[BaseModel] = Completion

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

    def prompt(self, request: Any) -> str:
        raise NotImplementedError

    def decode_request(self, request: GenerationRequest) -> tuple[str, Sampling, GenerationRequest]:
        self.check_model(request.model)
        limit = request.max_completion_tokens or request.max_tokens or self.lm.max_new_tokens
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        sampling = Sampling(
            max_tokens=limit, temperature=request.temperature, top_p=request.top_p, seed=request.seed, stop=stop
        )
        return self.prompt(request), sampling, request

    def predict(self, batch: list[tuple[str, Sampling, GenerationRequest]]) -> Iterator[list[Any]]:
        prompts, settings, owners = [], [], []
        for i, (prompt, sampling, request) in enumerate(batch):
            for choice in range(request.n):
                seed = None if sampling.seed is None else sampling.seed + choice
                prompts.append(prompt)
                settings.append(
                    Sampling(sampling.max_tokens, sampling.temperature, sampling.top_p, seed, sampling.stop)
                )
                owners.append((i, choice))
        created, ids = int(time.time()), [f"{self.kind}-{uuid.uuid4().hex[:24]}" for _ in batch]
        states: dict[int, list[RowState]] = {}
        done = [False] * len(batch)
        for step in self.lm.steps(prompts, settings):
            entries: list[Any] = [None] * len(batch)
            deltas: dict[int, list[tuple[int, str, RowState]]] = {}
            for (i, choice), (text, state) in zip(owners, step, strict=True):
                states.setdefault(i, [None] * batch[i][2].n)[choice] = state  # type: ignore[list-item]
                deltas.setdefault(i, []).append((choice, text, state))
            for i, (_, _, request) in enumerate(batch):
                if done[i]:
                    continue
                finished = all(s.finish_reason for s in states[i])
                tokens = sum(len(s.ids) for s in states[i]) if finished else 0
                if request.stream:
                    entries[i] = self._chunks(ids[i], created, deltas[i], finished, request, states[i], tokens)
                elif finished:
                    entries[i] = Final(self._whole(ids[i], created, states[i]), tokens)
                if finished:
                    done[i] = True
            yield entries
            if all(done):
                return

    def _usage(self, states: list[RowState]) -> dict[str, int]:
        completion = sum(len(s.ids) for s in states)
        return {
            "prompt_tokens": states[0].prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": states[0].prompt_tokens + completion,
        }

    def _chunks(
        self,
        cid: str,
        created: int,
        deltas: list[tuple[int, str, RowState]],
        finished: bool,
        request: GenerationRequest,
        states: list[RowState],
        tokens: int,
    ) -> Any:
        choices = [
            self.delta_choice(choice, text, state.finish_reason)
            for choice, text, state in deltas
            if text or (state.finish_reason and not getattr(state, "reported", False))
        ]
        for _, _, state in deltas:
            if state.finish_reason:
                state.reported = True  # type: ignore[attr-defined]
        out: list[Any] = []
        if choices:
            out.append(self.chunk(cid, created, choices))
        if finished and request.stream_options and request.stream_options.include_usage:
            out.append({**self.chunk(cid, created, []), "usage": self._usage(states)})
        if finished:
            out.append(END)
        return Chunks(out, tokens) if out else None

    def chunk(self, cid: str, created: int, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": cid,
            "object": f"{self.kind}.chunk" if self.kind == "chat.completion" else self.kind,
            "created": created,
            "model": self.model_name,
            "choices": choices,
        }

    def delta_choice(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def whole_choice(self, index: int, state: RowState) -> dict[str, Any]:
        raise NotImplementedError

    def _whole(self, cid: str, created: int, states: list[RowState]) -> dict[str, Any]:
        """The non-streamed answer: every choice, and usage."""
        choices = [
            {**self.whole_choice(i, s), "finish_reason": s.finish_reason, "logprobs": None}
            for i, s in enumerate(states)
        ]
        return {
            "id": cid,
            "object": self.kind,
            "created": created,
            "model": self.model_name,
            "choices": choices,
            "usage": self._usage(states),
        }


class ChatCompletions(_Generation):
    kind = "chat.completion"
    response_model = ChatCompletion
    chunk_model = ChatCompletionChunk
    example_body: ClassVar[dict[str, Any]] = {"messages": [{"role": "user", "content": "Say hello."}]}

    def decode(self, request: ChatRequest) -> tuple[str, Sampling, GenerationRequest]:
        return self.decode_request(request)

    def prompt(self, request: ChatRequest) -> str:
        return str(self.lm.render([{"role": m.role, "content": _text(m.content)} for m in request.messages]))

    def delta_choice(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        delta = {"role": "assistant", "content": text} if text else {}
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

    def whole_choice(self, index: int, state: RowState) -> dict[str, Any]:
        return {"index": index, "message": {"role": "assistant", "content": state.text}}


class Completions(_Generation):
    kind = "text_completion"

    def decode(self, request: CompletionRequest) -> tuple[str, Sampling, GenerationRequest]:
        return self.decode_request(request)

    def prompt(self, request: CompletionRequest) -> str:
        return request.prompt

    def delta_choice(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}

    def whole_choice(self, index: int, state: RowState) -> dict[str, Any]:
        return {"index": index, "text": state.text}


class Embeddings:
    """`/v1/embeddings`: each input string is one item, batched with other requests' items."""

    response_model = EmbeddingResponse

    def __init__(self, lm: LanguageModel, model_name: str) -> None:
        self.lm = lm
        self.model_name = model_name
        self.example = {"model": model_name, "input": ["servectl serves models.", "One YAML file."]}

    def decode(self, request: EmbeddingRequest) -> Many:
        if request.model != self.model_name:
            msg = f"The model `{request.model}` does not exist; this server serves `{self.model_name}`"
            raise InvalidInput(msg, "model", status=404)
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts:
            raise InvalidInput("input must not be empty", "input", status=400)
        if request.dimensions is not None and request.dimensions > self.lm.width:
            raise InvalidInput(f"dimensions must be at most {self.lm.width} for this model", "dimensions", status=400)
        return Many(zip(texts, [request] * len(texts), self.lm.count(texts), strict=True))

    def predict(self, batch: list[tuple[str, EmbeddingRequest, int]]) -> list[Any]:
        vectors = self.lm.embed([text for text, _, _ in batch])
        return [(vec, request, n) for vec, (_, request, n) in zip(vectors, batch, strict=True)]

    def encode(self, outputs: list[tuple[list[float], EmbeddingRequest, int]]) -> dict[str, Any]:
        data = []
        request = outputs[0][1]
        for i, (vec, _, _) in enumerate(outputs):
            if request.dimensions:
                vec = vec[: request.dimensions]
                norm = sum(v * v for v in vec) ** 0.5 or 1.0
                vec = [v / norm for v in vec]
            embedding: Any = vec
            if request.encoding_format == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = sum(n for _, _, n in outputs)
        return {
            "object": "list",
            "data": data,
            "model": self.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
