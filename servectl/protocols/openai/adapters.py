"""`/v1/chat/completions` and `/v1/completions` over a language model's engine.

Each request becomes a job: a sequence per prompt and choice, each with its own sampling,
joining the engine's running batch (continuous batching); after every step the job says
what to send: stream chunks (one choice each, as OpenAI sends them: text, finish reason,
log-probabilities; usage last) or, for a client that did not ask to stream, the whole answer
once every choice is done. A completion's `echo` puts the prompt (with `logprobs`, its
tokens' too) before each choice's text.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from servectl.protocols.openai.lm import LanguageModel
from servectl.protocols.openai.logprobs import TextOffsets, chat_logprobs, completion_logprobs, vllm_prompt_logprobs
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
from servectl.protocols.openai.structured import apply_structured
from servectl.protocols.openai.tool_calls import ToolOutput
from servectl.protocols.openai.tools import ToolPlan, apply_tools, history_message, plan_of
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
    echo: list[str] | None = None  # per sequence, the prompt text its answer starts with
    tools: ToolOutput | None = None  # chat with tools: the calls read out of each answer


class _Generation:
    """What chat and completions share: sequences per request, and their answers after
    every step of the engine that runs them."""

    kind = "text_completion"
    response_model: type[BaseModel] = Completion  # documented answer types (OpenAPI, clients)
    chunk_model: type[BaseModel] = Completion
    field = "prompt"  # the parameter a too-long prompt is blamed on
    invalid_status = 400  # OpenAI answers invalid parameters with a 400

    def __init__(self, lm: LanguageModel, model_name: str, tool_parser: str = "hermes") -> None:
        self.lm = lm
        self.model_name = model_name
        self.tool_parser = tool_parser  # how tool calls look in the model's text (model.tool_parser)
        self.example = {"model": model_name, **self.example_body, "max_tokens": 16}

    example_body: ClassVar[dict[str, Any]] = {"prompt": "Once upon a time"}

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise InvalidInput(
                f"The model `{model}` does not exist; this server serves `{self.model_name}`", "model", status=404
            )

    def prompts(self, request: Any, plan: ToolPlan | None = None) -> list[Prompt]:
        raise NotImplementedError

    def decode_request(self, request: GenerationRequest, plan: ToolPlan | None = None) -> Decoded:
        self.check_model(request.model)
        if request.stream_options is not None and not request.stream:
            msg = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
            raise InvalidInput(msg, "stream_options", status=400)
        asked = request.max_completion_tokens is not None or request.max_tokens is not None
        echo = isinstance(request, CompletionRequest) and request.echo
        seqs, echoed = [], []
        for prompt in self.prompts(request, plan):
            for choice in range(request.n):
                sampling = sampling_of(request, self.lm.max_new_tokens)
                apply_structured(request, sampling)  # structured outputs: the constraint it decodes under
                if plan is not None:
                    apply_tools(plan, sampling, self.tool_parser)
                if sampling.seed is not None:
                    sampling.seed += choice
                seq = self.lm.sequence(prompt, sampling, asked, self.field)
                seqs.append(seq)
                if echo:  # the prompt as given, or as the model took it (token ids, truncated)
                    as_given = isinstance(prompt, str) and sampling.truncate_prompt_tokens is None
                    echoed.append(prompt if isinstance(prompt, str) and as_given else self.lm.text_of(seq.prompt))
        return Decoded(request, seqs, echoed if echo else None)

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

    def delta_choice(self, index: int, text: str, finish: str | None, logprobs: Any) -> dict[str, Any]:
        raise NotImplementedError

    def whole_choice(self, index: int, job: GenerationJob) -> dict[str, Any]:
        raise NotImplementedError

    def logprobs(self, seq: Sequence, entries: list[TokenLogprob], offsets: TextOffsets) -> Any:
        """A choice's `logprobs` for these entries (None when not asked for)."""
        raise NotImplementedError

    def whole(self, job: GenerationJob) -> dict[str, Any]:
        """The non-streamed answer: every choice, and usage."""
        return {
            "id": job.id,
            "object": self.kind,
            "created": job.created,
            "model": self.model_name,
            "choices": [self.whole_choice(i, job) for i in range(len(job.seqs))],
            "usage": job.usage(),
        }


class GenerationJob:
    """One request's sequences in the engine; after each step, the chunks (or the whole
    answer) they make."""

    def __init__(self, adapter: _Generation, decoded: Decoded, engine: Engine) -> None:
        self.adapter = adapter
        self.request = decoded.request
        self.seqs = decoded.seqs
        self.echo = decoded.echo
        self.tools = decoded.tools
        self.offsets = [TextOffsets() for _ in self.seqs]  # completions' text_offset, per choice
        self.started = [False] * len(self.seqs)
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
            return Final(self.adapter.whole(self), tokens, prompt) if finished else None
        out = [self.adapter.chunk(self.id, self.created, [c]) for i in range(len(self.seqs)) if (c := self._delta(i))]
        if finished:
            options = self.request.stream_options
            if options and options.include_usage:
                out.append({**self.adapter.chunk(self.id, self.created, []), "usage": self.usage()})
            out.append(END)
        return Chunks(out, tokens, prompt) if out else None

    def _delta(self, index: int) -> dict[str, Any] | None:
        """Choice `index`'s news since the last step (one chunk's choice), if any; an echo
        sends the prompt, and its tokens, as soon as the prompt's log-probabilities are in."""
        seq = self.seqs[index]
        text = seq.take()
        finish = seq.finish_reason if seq.done and not seq.reported else None
        echo = self.echo is not None and not self.started[index]
        echo = echo and (seq.done or seq.sampling.prompt_logprobs is None or seq.prompt_logprobs is not None)
        if not (text or finish or echo):
            return None
        seq.reported = seq.reported or finish is not None
        entries = seq.take_logprobs()
        if echo and self.echo is not None:
            self.started[index] = True
            text = self.echo[index] + text
            entries = (seq.prompt_logprobs or []) + entries
        choice = self.adapter.delta_choice(
            index, text, finish, self.adapter.logprobs(seq, entries, self.offsets[index])
        )
        return self.tools.delta(index, choice) if self.tools is not None else choice

    def _prompt_tokens(self) -> int:
        return sum(seq.prompt_tokens for seq in self.seqs[:: self.request.n])

    def usage(self) -> dict[str, int]:
        prompt = self._prompt_tokens()
        completion = sum(len(seq.ids) for seq in self.seqs)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChatCompletions(_Generation):
    kind = "chat.completion"
    response_model = ChatCompletion
    chunk_model = ChatCompletionChunk
    field = "messages"
    example_body: ClassVar[dict[str, Any]] = {"messages": [{"role": "user", "content": "Say hello."}]}

    def decode(self, request: ChatRequest) -> Decoded:
        plan = plan_of(request)
        decoded = self.decode_request(request, plan)
        if plan is not None:  # tool_choice none: only a `complete` hook's own calls
            decoded.tools = ToolOutput(decoded.seqs, None if plan.choice == "none" else self.tool_parser, plan.legacy)
        return decoded

    def prompts(self, request: ChatRequest, plan: ToolPlan | None = None) -> list[Prompt]:
        messages = [
            history_message(m.role, _text(m.content), m.model_dump(exclude_none=True)) for m in request.messages
        ]
        return [str(self.lm.render(messages, plan.schemas() if plan else None, self.tool_parser))]

    def delta_choice(self, index: int, text: str, finish: str | None, logprobs: Any) -> dict[str, Any]:
        delta = {"role": "assistant", "content": text} if text else {}
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}

    def whole_choice(self, index: int, job: GenerationJob) -> dict[str, Any]:
        seq = job.seqs[index]
        choice = {
            "index": index,
            "message": {"role": "assistant", "content": seq.text, "refusal": None},
            "finish_reason": seq.finish_reason,
            "logprobs": self.logprobs(seq, seq.logprobs, TextOffsets()),
        }
        return job.tools.whole(index, choice) if job.tools is not None else choice

    def whole(self, job: GenerationJob) -> dict[str, Any]:
        answer = super().whole(job)
        k = job.request.prompt_logprobs
        if k is not None:  # vLLM's, beside the choices (the prompt is the same for all)
            answer["prompt_logprobs"] = vllm_prompt_logprobs(job.seqs[0].prompt_logprobs, k)
        return answer

    def logprobs(self, seq: Sequence, entries: list[TokenLogprob], offsets: TextOffsets) -> Any:
        return chat_logprobs(entries) if seq.sampling.logprobs is not None else None


class Completions(_Generation):
    kind = "text_completion"

    def __init__(self, lm: LanguageModel, model_name: str, tool_parser: str = "hermes") -> None:
        super().__init__(lm, model_name, tool_parser)
        self.request_model = with_token_range(CompletionRequest, "prompt", lm.vocab)

    def decode(self, request: CompletionRequest) -> Decoded:
        return self.decode_request(request)

    def prompts(self, request: CompletionRequest, plan: ToolPlan | None = None) -> list[Prompt]:
        return prompts_of(request)

    def delta_choice(self, index: int, text: str, finish: str | None, logprobs: Any) -> dict[str, Any]:
        return {"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}

    def whole_choice(self, index: int, job: GenerationJob) -> dict[str, Any]:
        seq = job.seqs[index]
        echo = job.echo[index] if job.echo is not None else None
        entries = seq.logprobs if echo is None else (seq.prompt_logprobs or []) + seq.logprobs
        choice = {
            "index": index,
            "text": seq.text if echo is None else echo + seq.text,
            "finish_reason": seq.finish_reason,
            "logprobs": self.logprobs(seq, entries, TextOffsets()),
        }
        k = job.request.prompt_logprobs
        if k is not None:  # vLLM's
            choice["prompt_logprobs"] = vllm_prompt_logprobs(seq.prompt_logprobs, k)
        return choice

    def logprobs(self, seq: Sequence, entries: list[TokenLogprob], offsets: TextOffsets) -> Any:
        k = seq.sampling.logprobs
        return None if k is None else completion_logprobs(entries, k, offsets)
