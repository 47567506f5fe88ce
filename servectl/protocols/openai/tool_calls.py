"""Tool calling, answer side: the calls in a model's text, read by the spec's parser
(`hermes`: `<tool_call>{json}</tool_call>` blocks; `llama3_json`: the whole answer one or more
`{"name", "parameters"}` objects), and the calls a custom `complete` yielded, turned into
OpenAI's `tool_calls` (ids `call_...`, `arguments` a JSON text) with finish_reason
`tool_calls`, or the legacy `function_call` / `function_call` when the request used
`functions`. Streamed, text that may still open a call is held back, and each call goes
out as one `delta.tool_calls` entry once it is complete.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from servectl.runners.sequence import Sequence
from servectl.sdk import ToolCall

_HERMES_OPEN, _HERMES_CLOSE = "<tool_call>", "</tool_call>"
_PYTHON_TAG = "<|python_tag|>"


@dataclass(slots=True)
class Call:
    """One call read from an answer: the function and its arguments as JSON text."""

    name: str
    arguments: str
    id: str = ""

    def wire(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": "function", "function": self.function()}
        return out if index is None else {"index": index, **out}

    def function(self) -> dict[str, str]:
        return {"name": self.name, "arguments": self.arguments}


def new_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _call(obj: Any, key: str) -> Call | None:
    """A parsed JSON object as a call, if it is one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(key, obj.get("arguments", obj.get("parameters", {})))
    text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return Call(obj["name"], text, new_id())


def from_handler(call: ToolCall) -> Call:
    args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments, ensure_ascii=False)
    return Call(call.name, args, call.id or new_id())


def split_hermes(text: str) -> tuple[str, list[Call]]:
    """Content outside `<tool_call>` blocks, and the calls in them (a block that does not
    parse stays content; a last block may lack its closing tag)."""
    content, calls, at = [], [], 0
    while True:
        start = text.find(_HERMES_OPEN, at)
        if start < 0:
            content.append(text[at:])
            break
        content.append(text[at:start])
        end = text.find(_HERMES_CLOSE, start)
        stop = end if end >= 0 else len(text)
        call = _parse(text[start + len(_HERMES_OPEN) : stop], "arguments")
        if call is None:
            content.append(text[start : stop + (len(_HERMES_CLOSE) if end >= 0 else 0)])
        else:
            calls.append(call)
        if end < 0:
            break
        at = end + len(_HERMES_CLOSE)
    return "".join(content), calls


def split_llama3(text: str) -> tuple[str, list[Call]]:
    """The whole answer as `{"name", "parameters"}` objects separated by `;`, or content."""
    body = text.strip().removeprefix(_PYTHON_TAG).strip()
    decoder, calls, at = json.JSONDecoder(), [], 0
    while body.startswith("{", at):
        try:
            obj, at = decoder.raw_decode(body, at)
        except ValueError:
            return text, []
        call = _call(obj, "parameters")
        if call is None:
            return text, []
        calls.append(call)
        while at < len(body) and body[at] in " \n\t;":
            at += 1
    return (text, []) if at < len(body) or not calls else ("", calls)


def _parse(block: str, key: str) -> Call | None:
    try:
        return _call(json.loads(block), key)
    except ValueError:
        return None


class CallReader:
    """One choice's answer read as it streams: content that cannot open a call goes out at
    once; a call goes out when it is whole."""

    def __init__(self, parser: str | None) -> None:
        self.parser = parser  # None: tool_choice none, nothing is read as a call
        self.held = ""
        self.count = 0  # calls sent
        self.decided = False  # llama3_json: the answer is content (True) once it cannot be calls

    def feed(self, text: str, last: bool) -> tuple[str, list[Call]]:
        self.held += text
        if self.parser is None:
            out, self.held = self.held, ""
            return out, []
        if last:
            split = split_llama3 if self.parser == "llama3_json" else split_hermes
            content, calls = split(self.held)
            self.held = ""
            return (content.strip() if calls or self.count else content), calls
        if self.parser == "llama3_json":
            return self._llama3()
        return self._hermes()

    def _llama3(self) -> tuple[str, list[Call]]:
        if not self.decided:
            head = self.held.lstrip()
            if not head or head.startswith(("{", _PYTHON_TAG)) or _PYTHON_TAG.startswith(head):
                return "", []  # may be calls: read at the end
            self.decided = True
        out, self.held = self.held, ""
        return out, []

    def _hermes(self) -> tuple[str, list[Call]]:
        content, calls = "", []
        while True:
            start = self.held.find(_HERMES_OPEN)
            if start < 0:
                keep = _partial_suffix(self.held, _HERMES_OPEN)
                content += self.held[: len(self.held) - keep]
                self.held = self.held[len(self.held) - keep :]
                break
            content += self.held[:start]
            end = self.held.find(_HERMES_CLOSE, start)
            if end < 0:
                self.held = self.held[start:]
                break
            block = self.held[start : end + len(_HERMES_CLOSE)]
            found = split_hermes(block)[1]
            if found:
                calls += found
            else:
                content += block
            self.held = self.held[end + len(_HERMES_CLOSE) :]
        if (calls or self.count) and not content.strip():
            content = ""
        return content, calls


def _partial_suffix(text: str, tag: str) -> int:
    """How many of `text`'s last characters could begin `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ToolOutput:
    """A chat job's answers with tool calls: each choice's text read for calls, and the
    calls a `complete` hook yielded."""

    def __init__(self, seqs: list[Sequence], parser: str | None, legacy: bool) -> None:
        self.seqs = seqs
        self.legacy = legacy
        self.readers = [CallReader(parser) for _ in seqs]
        self.handed = [0] * len(seqs)  # handler calls taken per choice

    def _handler_calls(self, index: int) -> list[Call]:
        seq = self.seqs[index]
        new = [from_handler(c) for c in seq.tool_calls[self.handed[index] :]]
        self.handed[index] = len(seq.tool_calls)
        return new

    def _finish(self, finish: str | None, called: bool) -> str | None:
        if finish == "stop" and called:
            return "function_call" if self.legacy else "tool_calls"
        return finish

    def delta(self, index: int, choice: dict[str, Any]) -> dict[str, Any] | None:
        """A streamed choice with its content read for calls (None: nothing to send yet)."""
        reader = self.readers[index]
        finish = choice.get("finish_reason")
        content, calls = reader.feed(choice["delta"].get("content") or "", finish is not None)
        calls += self._handler_calls(index)
        delta: dict[str, Any] = {"role": "assistant"}
        if content:
            delta["content"] = content
        if calls and self.legacy:
            if not reader.count:
                delta["function_call"] = calls[0].function()
        elif calls:
            delta["tool_calls"] = [c.wire(reader.count + k) for k, c in enumerate(calls)]
        reader.count += len(calls)
        if len(delta) == 1 and finish is None and not choice.get("logprobs"):
            return None
        return {
            **choice,
            "delta": delta if len(delta) > 1 else {},
            "finish_reason": self._finish(finish, reader.count > 0),
        }

    def whole(self, index: int, choice: dict[str, Any]) -> dict[str, Any]:
        """A whole choice with its message's calls read out of its content."""
        message = dict(choice["message"])
        content, calls = self.readers[index].feed(message.get("content") or "", last=True)
        calls += self._handler_calls(index)
        if not calls:
            return choice
        message["content"] = content or None
        if self.legacy:
            message["function_call"] = calls[0].function()
        else:
            message["tool_calls"] = [c.wire() for c in calls]
        return {**choice, "message": message, "finish_reason": self._finish(choice.get("finish_reason"), True)}
