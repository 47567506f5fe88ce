"""`POST /v1/responses`, request side: OpenAI's `CreateResponse` body, checked, and turned into
the chat request the chat machinery already serves (prompt, sampling, structured output,
tools), so a Responses request decodes, batches and constrains exactly as chat does.

`input` items become chat messages: a message (role user, system, developer or assistant;
content a string or `input_text` / `output_text` parts), a `function_call` (an assistant turn's
tool call) and a `function_call_output` (a `tool` message answering `call_id`). `instructions`
is a system message before them. `text.format` is chat's `response_format`; the flat function
`tools` and `tool_choice` are chat's nested ones. An error raised by the chat side names a
chat parameter: `responses_param` renames it to the Responses one (`messages` -> `input`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from servectl.protocols.openai.schemas import ChatRequest, _Request
from servectl.sdk import InvalidInput

# CreateResponse fields (openai/openai-openapi) servectl does not use: accepted, and not used
RESPONSES_UNUSED = frozenset(
    {"context_management", "include", "max_tool_calls", "moderation", "prompt_cache_key", "prompt_cache_options"}
    | {"prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "stream_options"}
    | {"top_logprobs", "truncation"}
)
_TEXT_PARTS = ("input_text", "output_text", "refusal")
_ROLES = ("user", "system", "developer", "assistant")


class ResponsesRequest(_Request):
    """OpenAI's `CreateResponse`, the fields servectl serves (others are a 400 naming them)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | list[dict[str, Any]] = Field(
        default_factory=list,
        description="A text (one user message), or items: messages `{role, content}` (content a text or "
        "`input_text` parts), `function_call` and `function_call_output` items.",
    )
    instructions: str | None = Field(None, description="A system message before the input (not carried over).")
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    text: dict[str, Any] | None = Field(
        None,
        description='`{"format": {"type": "text"} | {"type": "json_object"} | {"type": "json_schema", "name", '
        '"schema", "strict"}}`: a JSON format is decoded under a grammar, so the text always parses.',
    )
    tools: list[dict[str, Any]] | None = Field(
        None, description='Functions: `{"type": "function", "name", "description", "parameters", "strict"}`.'
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None, description='`none`, `auto` (the default), `required`, or `{"type": "function", "name"}`.'
    )
    parallel_tool_calls: bool = True
    stream: bool = False
    store: bool = Field(True, description="Keep the response (in the server's memory) for previous_response_id.")
    previous_response_id: str | None = Field(
        None, description="Continue from a stored response: its input and output come before this input."
    )
    metadata: dict[str, str] | None = None
    user: str | None = None
    background: bool = Field(False, description="Only false: responses are answered in the request.")
    conversation: None = Field(None, description="Not served: use previous_response_id.")
    prompt: None = Field(None, description="Not served (prompt templates): send input and instructions.")

    @model_validator(mode="before")
    @classmethod
    def _openai_unused(cls, data: Any) -> Any:
        if isinstance(data, dict) and not RESPONSES_UNUSED.isdisjoint(data):
            return {k: v for k, v in data.items() if k not in RESPONSES_UNUSED}
        return data

    @field_validator("background")
    @classmethod
    def _foreground(cls, background: bool) -> bool:
        if background:
            raise ValueError("background responses are not served; leave `background` false")
        return background

    @field_validator("conversation", "prompt", mode="before")
    @classmethod
    def _not_served(cls, value: Any, info: ValidationInfo) -> None:
        if value is not None:
            instead = "previous_response_id" if info.field_name == "conversation" else "input and instructions"
            raise ValueError(f"`{info.field_name}` is not served by this server; send {instead}")


def chat_request(request: ResponsesRequest) -> ChatRequest:
    """The chat request that answers `request` (its stream always ends with usage)."""
    messages = ([{"role": "system", "content": request.instructions}] if request.instructions else []) + messages_of(
        request.input
    )
    if not messages:
        raise InvalidInput("input must not be empty: send a text or at least one message", "input", 400)
    chat: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stream": request.stream,
        "parallel_tool_calls": request.parallel_tool_calls,
    }
    if request.max_output_tokens is not None:
        chat["max_completion_tokens"] = request.max_output_tokens
    if request.stream:
        chat["stream_options"] = {"include_usage": True}
    if request.text is not None:
        chat["response_format"] = response_format(request.text)
    if request.tools is not None:
        chat["tools"] = [chat_tool(tool, i) for i, tool in enumerate(request.tools)]
    if request.tool_choice is not None:
        chat["tool_choice"] = chat_tool_choice(request.tool_choice)
    return ChatRequest.model_validate(chat)


def messages_of(given: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`input` as chat messages; consecutive calls join the assistant turn before them."""
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(given):
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise InvalidInput(f"role must be one of {', '.join(_ROLES)}", f"input[{i}].role", 400)
            messages.append({"role": role, "content": _text(item.get("content"), f"input[{i}].content")})
        elif kind == "function_call":
            call = {
                "id": _string(item, "call_id", i),
                "type": "function",
                "function": {"name": _string(item, "name", i), "arguments": _string(item, "arguments", i)},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = _text(item.get("output"), f"input[{i}].output")
            messages.append({"role": "tool", "tool_call_id": _string(item, "call_id", i), "content": output})
        else:
            served = "message, function_call or function_call_output"
            raise InvalidInput(f"input item type {kind!r} is not served; one of {served}", f"input[{i}].type", 400)
    return messages


def _string(item: dict[str, Any], key: str, i: int) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidInput(f"a {item.get('type')} item needs `{key}`: a string", f"input[{i}].{key}", 400)
    return value


def _text(content: Any, where: str) -> str:
    """A message's content (or a call's output): a string, or text parts joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidInput("content must be a string or a list of `input_text` parts", where, 400)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS:
            msg = f"content part type {kind!r} is not served; send `input_text` parts (this model reads text only)"
            raise InvalidInput(msg, f"{where}[{j}].type", 400)
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise InvalidInput("a text part needs `text`: a string", f"{where}[{j}].text", 400)
        texts.append(text)
    return "".join(texts)


def response_format(text: dict[str, Any]) -> dict[str, Any]:
    """`text` (`format`, and `verbosity`, which is not used) as chat's `response_format`."""
    for key in text:
        if key not in ("format", "verbosity"):
            raise InvalidInput(f"unknown field `{key}`; `text` takes `format`", f"text.{key}", 400)
    fmt = text.get("format") or {"type": "text"}
    if not isinstance(fmt, dict):
        raise InvalidInput("format must be an object with `type`", "text.format", 400)
    if fmt.get("type") != "json_schema":
        return fmt  # text, json_object; chat's check names any other type
    inner = {k: v for k, v in fmt.items() if k != "type"}
    return {"type": "json_schema", "json_schema": inner}


def chat_tool(tool: Any, i: int) -> dict[str, Any]:
    """A flat function tool as chat's `{type, function: {...}}`."""
    if not isinstance(tool, dict):
        raise InvalidInput("a tool is an object", f"tools[{i}]", 400)
    kind = tool.get("type")
    if kind != "function":
        raise InvalidInput(f"tool type {kind!r} is not served; only `function`", f"tools[{i}].type", 400)
    function = {k: v for k, v in tool.items() if k != "type"}
    return {"type": "function", "function": function}


def chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice  # none, auto, required; chat's check names anything else
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    msg = 'tool_choice must be "none", "auto", "required" or {"type": "function", "name"}'
    raise InvalidInput(msg, "tool_choice", 400)


_RENAMED = [
    (re.compile(r"^messages"), "input"),
    (re.compile(r"^max_completion_tokens"), "max_output_tokens"),
    (re.compile(r"^response_format\.json_schema"), "text.format"),
    (re.compile(r"^response_format"), "text.format"),
    (re.compile(r"^tools\[(\d+)\]\.function"), r"tools[\1]"),
]


def responses_param(param: str) -> str:
    """A chat parameter's name as the Responses request calls it."""
    for pattern, name in _RENAMED:
        param, found = pattern.subn(name, param, count=1)
        if found:
            break
    return param


def renamed(exc: InvalidInput) -> InvalidInput:
    """A chat-side error naming the Responses parameter (400 where chat's status is 422)."""
    status = 400 if exc.status == 422 else exc.status
    return InvalidInput(str(exc), responses_param(exc.field), status, exc.code)
