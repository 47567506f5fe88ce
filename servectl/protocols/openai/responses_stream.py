"""A streamed Response: the chat job's chunks (one choice, text deltas and whole tool calls,
then usage) as the Responses API's typed events, each with its `sequence_number`:

`response.created`, `response.in_progress`; per text run `response.output_item.added` (a
`message`), `response.content_part.added` (its `output_text`), `response.output_text.delta`...,
then `response.output_text.done`, `response.content_part.done`, `response.output_item.done`;
per tool call `response.output_item.added` (a `function_call`),
`response.function_call_arguments.delta` (the arguments whole: the chat side sends a call
once it is complete), `response.function_call_arguments.done`, `response.output_item.done`;
last `response.completed` (or `response.incomplete`, cut by max_output_tokens) with the
whole Response. A failure after the first event is `response.failed`, then the end.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from servectl.protocols.openai.responses_body import (
    Envelope,
    ResponseObject,
    call_item,
    message_item,
    new_id,
    status_of,
)
from servectl.sdk import END, InvalidInput


class EventStream:
    """One streamed Response's events, as the chat chunks come."""

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # the items done
        self.message: dict[str, Any] | None = None  # the message item whose text is streaming
        self.text: list[str] = []
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def feed(self, chunks: list[Any]) -> list[Any]:
        """The events for one step's chat chunks (END last: the Response is done)."""
        out: list[Any] = []
        if not self.started:
            self.started = True
            body = self.envelope.body("in_progress", [])
            out += [self.event("response.created", response=body), self.event("response.in_progress", response=body)]
        for chunk in chunks:
            if chunk is END:
                out += self._close_message()
                status = status_of(self.finish)
                body = self.envelope.body(status, self.output, self.usage)
                kind = "response.completed" if status == "completed" else "response.incomplete"
                out += [self.event(kind, response=body), END]
                continue
            if chunk.get("usage") is not None:
                self.usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    out += self._text(delta["content"])
                for call in delta.get("tool_calls") or []:
                    out += self._call(call)
                self.finish = choice.get("finish_reason") or self.finish
        return out

    def failed(self, exc: Exception) -> list[Any]:
        """`response.failed` (the items done so far), then the end."""
        code = "invalid_prompt" if isinstance(exc, InvalidInput) else "server_error"
        message = str(exc) if isinstance(exc, InvalidInput) else "the model failed while answering"
        body = self.envelope.body("failed", self.output, self.usage, {"code": code, "message": message})
        return [self.event("response.failed", response=body), END]

    def _text(self, text: str) -> list[dict[str, Any]]:
        out = []
        if self.message is None:
            self.message = message_item(new_id("msg"), "", "in_progress")
            added = {**self.message, "content": []}
            out.append(self.event("response.output_item.added", output_index=len(self.output), item=added))
            out.append(self.event("response.content_part.added", part=self.message["content"][0], **self._where()))
        self.text.append(text)
        out.append(self.event("response.output_text.delta", delta=text, logprobs=[], **self._where()))
        return out

    def _where(self) -> dict[str, Any]:
        assert self.message is not None
        return {"item_id": self.message["id"], "output_index": len(self.output), "content_index": 0}

    def _close_message(self) -> list[dict[str, Any]]:
        if self.message is None:
            return []
        text, where = "".join(self.text), self._where()
        item = message_item(self.message["id"], text, status_of(self.finish))
        part = item["content"][0]
        out = [
            self.event("response.output_text.done", text=text, logprobs=[], **where),
            self.event("response.content_part.done", part=part, **where),
            self.event("response.output_item.done", output_index=where["output_index"], item=item),
        ]
        self.output.append(item)
        self.message, self.text = None, []
        return out

    def _call(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        out = self._close_message()
        item = call_item(call)
        index, where = len(self.output), {"item_id": item["id"], "output_index": len(self.output)}
        out += [
            self.event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            ),
            self.event("response.function_call_arguments.delta", delta=item["arguments"], **where),
            self.event(
                "response.function_call_arguments.done", name=item["name"], arguments=item["arguments"], **where
            ),
            self.event("response.output_item.done", output_index=index, item=item),
        ]
        self.output.append(item)
        return out


class ResponseStreamEvent(BaseModel):
    """One SSE event of a streamed Response; `type` says which fields it has."""

    type: str = Field(
        description="`response.created`, `response.in_progress`, `response.output_item.added`, "
        "`response.content_part.added`, `response.output_text.delta`, `response.output_text.done`, "
        "`response.content_part.done`, `response.output_item.done`, `response.function_call_arguments.delta`, "
        "`response.function_call_arguments.done`, `response.completed`, `response.incomplete` or `response.failed`."
    )
    sequence_number: int = Field(description="0 for the first event, one more for each after.")
    response: ResponseObject | None = None
    output_index: int | None = None
    item: dict[str, Any] | None = None
    item_id: str | None = None
    content_index: int | None = None
    part: dict[str, Any] | None = None
    delta: str | None = None
    text: str | None = None
    name: str | None = None
    arguments: str | None = None
    logprobs: list[Any] | None = None
