"""`POST /v1/responses` (OpenAI's Responses API) over the chat adapter.

A Responses request becomes a chat request (`responses_input.py`) that the chat adapter
decodes into sequences for the same engine (continuous batching, grammars, tools); its job
is the chat job, whose answer is turned back into a Response: the text as a `message` item
with an `output_text` part, each tool call as a `function_call` item (`call_id`, `name`,
`arguments`), usage as `input_tokens` / `output_tokens`, and `status` `incomplete` (reason
`max_output_tokens`) where chat would say finish_reason `length`. Streamed, the chat chunks
become the typed events (`responses_stream.py`). `store` and `previous_response_id` are the
API process's (`responses_store.py`): a worker sees the history already in `input`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from servectl.protocols.openai.adapters import ChatCompletions, Decoded, GenerationJob
from servectl.protocols.openai.responses_body import Envelope, ResponseObject, whole_response
from servectl.protocols.openai.responses_input import ResponsesRequest, chat_request, renamed, responses_param
from servectl.protocols.openai.responses_stream import EventStream, ResponseStreamEvent
from servectl.runners.engine import Engine
from servectl.sdk import Chunks, Final, InvalidInput

log = logging.getLogger("servectl")


@dataclass(slots=True)
class ResponsesDecoded:
    request: ResponsesRequest
    chat: Decoded


class Responses:
    """The `/v1/responses` route's adapter: decoded and answered by the chat adapter."""

    invalid_status = 400  # OpenAI answers invalid parameters with a 400

    def __init__(self, chat: ChatCompletions) -> None:
        self.chat = chat
        self.response_model = ResponseObject  # documented answer types (OpenAPI, clients)
        self.chunk_model = ResponseStreamEvent
        self.example = {"model": chat.model_name, "input": "Say hello.", "max_output_tokens": 16}

    def decode(self, request: ResponsesRequest) -> ResponsesDecoded:
        try:
            return ResponsesDecoded(request, self.chat.decode(chat_request(request)))
        except InvalidInput as exc:
            raise renamed(exc) from None
        except ValidationError as exc:  # the chat request's own checks (ranges, shapes)
            first = exc.errors(include_url=False)[0]
            where = responses_param(".".join(str(p) for p in first["loc"]))
            raise InvalidInput(str(first["msg"]).removeprefix("Value error, "), where, 400) from None

    def generation_job(self, decoded: ResponsesDecoded) -> ResponsesJob:
        return ResponsesJob(decoded.request, self.chat.generation_job(decoded.chat), self.chat.model_name)


class ResponsesJob:
    """A chat job whose answer goes out as a Response, or as the Responses stream events."""

    def __init__(self, request: ResponsesRequest, inner: GenerationJob, model: str) -> None:
        self.inner = inner
        self.envelope = Envelope.of(request, model)
        self.events = EventStream(self.envelope) if request.stream else None

    @property
    def engine(self) -> Engine:
        return self.inner.engine

    def close(self) -> None:
        self.inner.close()

    def progress(self) -> Any:
        if self.events is None:
            entry = self.inner.progress()
            if entry is None:
                return None
            return Final(whole_response(self.envelope, entry.value), entry.tokens, entry.prompt_tokens)
        try:
            entry = self.inner.progress()
        except Exception as exc:
            if not self.events.started:
                raise  # no event sent yet: an error answer with its status
            log.exception("response %s failed after its stream began", self.envelope.id)
            return Chunks(self.events.failed(exc))
        events = self.events.feed(entry if entry is not None else [])
        if not events:
            return None
        return Chunks(events, getattr(entry, "tokens", 0), getattr(entry, "prompt_tokens", 0))
