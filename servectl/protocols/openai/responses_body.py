"""A Response body (`/v1/responses`): what every body of one request repeats (`Envelope`),
chat's answer turned into output items and usage, and the documented answer type."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from servectl.protocols.openai.responses_input import ResponsesRequest


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(slots=True)
class Envelope:
    """What every Response body of one request repeats: its id, its time, the settings it
    echoes (as OpenAI does: instructions, tools, text format, sampling, store...)."""

    id: str
    created_at: int
    model: str
    echoed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, request: ResponsesRequest, model: str) -> Envelope:
        text = dict(request.text or {})
        fmt = dict(text.get("format") or {"type": "text"})
        if fmt.get("type") == "json_schema":
            fmt["strict"] = fmt.get("strict") is True
        text["format"] = fmt
        choice = request.tool_choice if request.tool_choice is not None else "auto"
        echoed = {
            "background": False,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "metadata": request.metadata or {},
            "parallel_tool_calls": request.parallel_tool_calls,
            "previous_response_id": request.previous_response_id,
            "reasoning": None,
            "store": request.store,
            "temperature": request.temperature,
            "text": text,
            "tool_choice": choice,
            "tools": [_tool_echo(tool) for tool in request.tools or []],
            "top_p": request.top_p,
            "truncation": "disabled",
        }
        if request.user is not None:
            echoed["user"] = request.user
        return cls(new_id("resp"), int(time.time()), model, echoed)

    def body(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The Response in `status`; `usage` (chat's) once it is done."""
        done = status in ("completed", "incomplete", "failed")
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if done else None,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "model": self.model,
            "output": output,
            **self.echoed,
        }
        if usage is not None:
            body["usage"] = responses_usage(usage)
        return body


def _tool_echo(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict") is True,
    }


def responses_usage(chat: dict[str, Any]) -> dict[str, Any]:
    """Chat's usage as the Responses API counts it."""
    prompt, completion = chat.get("prompt_tokens", 0), chat.get("completion_tokens", 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}


def call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    """A chat tool call (`{id, function: {name, arguments}}`) as a `function_call` item."""
    fn = call["function"]
    return {
        "id": new_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call["id"],
        "name": fn["name"],
        "arguments": fn["arguments"],
    }


def status_of(finish_reason: str | None) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


def whole_response(envelope: Envelope, chat: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion (one choice) as a Response: the text, then the calls."""
    choice = chat["choices"][0]
    message, status = choice["message"], status_of(choice.get("finish_reason"))
    calls = message.get("tool_calls") or []
    output = [call_item(call) for call in calls]
    if message.get("content") or not calls:
        output.insert(0, message_item(new_id("msg"), message.get("content") or "", status))
    return envelope.body(status, output, chat.get("usage"))


# --- the documented answer ------------------------------------------------------------


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class OutputText(BaseModel):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[Any]


class OutputItem(BaseModel):
    """A `message` (role, content) or a `function_call` (call_id, name, arguments)."""

    id: str
    type: Literal["message", "function_call"]
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"] | None = None
    content: list[OutputText] | None = None
    call_id: str | None = Field(None, description="A `function_call_output` item answering it names it.")
    name: str | None = None
    arguments: str | None = Field(None, description="The arguments, as a JSON text.")


class ResponseObject(BaseModel):
    """A Response, whole or in a stream event (`response.created`, `response.completed`...)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    completed_at: int | None
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None = Field(description='`{"reason": "max_output_tokens"}` if cut.')
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None = None
    instructions: str | None
    max_output_tokens: int | None
    metadata: dict[str, str]
    parallel_tool_calls: bool
    previous_response_id: str | None
    store: bool
    temperature: float
    top_p: float
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
