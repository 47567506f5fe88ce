"""Tool calling, request side: the `tools` a chat request offers, checked; `tool_choice` and
`parallel_tool_calls`; the legacy `functions` / `function_call` mapped onto the same; the
prompt they make (the model's chat template with `tools=`, or a built-in one); and, under
`required` or a named function, the grammar that makes the model's answer a valid call.

How calls look in the model's text is the spec's `model.tool_parser` (tool_calls.py reads
them back): `hermes` (Hermes, Qwen: `<tool_call>{"name", "arguments"}</tool_call>`) or
`llama3_json` (Llama 3: `{"name", "parameters"}`, several separated by `; `).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from servectl.runners.grammar import check, json_rule
from servectl.sdk import Constraint, InvalidInput, Sampling, Tool

PARSERS = ("hermes", "llama3_json")
_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")


class ToolFields(BaseModel):
    """The chat request fields about tools."""

    tools: list[dict[str, Any]] | None = Field(
        None,
        description='Functions the model may call: `{"type": "function", "function": {name, description, '
        "parameters}}`.",
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None,
        description='`none`, `auto` (the default with tools), `required`, or `{"type": "function", "function": '
        '{"name"}}`; under `required` or a named function the answer is decoded as a valid call.',
    )
    parallel_tool_calls: bool = Field(True, description="false: at most one call per answer.")
    functions: list[dict[str, Any]] | None = Field(None, description="Deprecated: `tools` of OpenAI's first API.")
    function_call: str | dict[str, Any] | None = Field(None, description="Deprecated: `tool_choice` of `functions`.")


@dataclass(slots=True)
class ToolPlan:
    """A chat request's tools, checked: which may be called and whether one must be."""

    tools: list[Tool]
    choice: Literal["none", "auto", "required"]
    name: str | None  # the one function that must be called
    parallel: bool
    legacy: bool  # asked with `functions`: answered with `function_call`

    def schemas(self) -> list[dict[str, Any]]:
        """The tools as chat templates take them (OpenAI's shape)."""
        return [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in self.tools
        ]


def plan_of(request: ToolFields) -> ToolPlan | None:
    """The request's tools, or None when it offers none. Bad ones are a 400 naming the field."""
    if request.functions is not None and request.tools is not None:
        raise InvalidInput("send `tools` or the deprecated `functions`, not both", "functions", status=400)
    legacy = request.functions is not None
    offered = request.functions if legacy else request.tools
    choice_value = request.function_call if legacy else request.tool_choice
    choice_param = "function_call" if legacy else "tool_choice"
    tools = [_tool(entry, i, legacy) for i, entry in enumerate(offered or [])]
    names = [t.name for t in tools]
    for i, taken in enumerate(names):
        if taken in names[:i]:
            raise InvalidInput(f"two tools are named {taken!r}", _where(i, legacy, "name"), status=400)
    choice, name = _choice(choice_value, choice_param, legacy)
    if name is not None and name not in names:
        offered_names = ", ".join(names) or "none"
        raise InvalidInput(
            f"{choice_param} names {name!r}, which is not a tool offered ({offered_names})", choice_param, status=400
        )
    if not tools:
        if choice == "required":
            raise InvalidInput(f"{choice_param} `required` needs tools", choice_param, status=400)
        return None
    parallel = request.parallel_tool_calls and not legacy and name is None
    return ToolPlan(tools, choice, name, parallel, legacy)


def apply_tools(plan: ToolPlan, sampling: Sampling, parser: str) -> None:
    """The tools into `sampling`; a forced call also constrains the decoding."""
    sampling.tools = plan.tools
    sampling.tool_choice = plan.choice
    sampling.tool_name = plan.name
    sampling.parallel_tool_calls = plan.parallel
    if plan.choice == "required":
        sampling.constraint = call_constraint(plan, parser)


def call_constraint(plan: ToolPlan, parser: str) -> Constraint:
    """Grammar of an answer made of calls only: one (a named function, or no parallel calls)
    or several, each a JSON object naming a function offered, its arguments valid against
    that function's parameters."""
    tools = [t for t in plan.tools if plan.name is None or t.name == plan.name]
    key = "parameters" if parser == "llama3_json" else "arguments"
    defs, options = {}, []
    for i, tool in enumerate(tools):
        defs[f"f{i}"] = _rebase(tool.parameters, f"#/$defs/f{i}")
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, key: {"$ref": f"#/$defs/f{i}"}},
                "required": ["name", key],
                "additionalProperties": False,
            }
        )
    schema = {"$defs": defs, "anyOf": options} if len(options) > 1 else {"$defs": defs, **options[0]}
    strict = all(t.strict for t in tools)
    body = json_rule(schema, strict)
    if parser == "llama3_json":
        call, sep = "call", '"; "'
        rules = f"call: {body}"
    else:
        call, sep = "call", r'"\n"'
        rules = f'call: "<tool_call>\\n" body "\\n</tool_call>"\nbody: {body}'
    start = f"start: {call} ({sep} {call})*" if plan.parallel else f"start: {call}"
    return Constraint("grammar", f"{start}\n{rules}", "tools", strict=strict)


def render_plain(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, parser: str) -> str:
    """The built-in chat template (models without one): `role: text` lines, the tools as JSON
    in a system preamble saying how to call them, calls in the parser's own format."""
    lines = []
    if tools:
        lines.append(f"system: {preamble(tools, parser)}\n")
    for m in messages:
        content = m.get("content") or ""
        for call in m.get("tool_calls") or []:
            fn = call.get("function", {})
            content += call_text(fn.get("name", ""), fn.get("arguments", {}), parser)
        lines.append(f"{m['role']}: {content}\n")
    return "".join(lines) + "assistant:"


def preamble(tools: list[dict[str, Any]], parser: str) -> str:
    listed = json.dumps([t["function"] for t in tools], ensure_ascii=False)
    example = call_text("<name>", {"<argument>": "<value>"}, parser)
    return f"You may call these functions: {listed}. To call one, answer {example}"


def call_text(name: str, arguments: Any, parser: str) -> str:
    """One call as the model writes it."""
    args = json.loads(arguments) if isinstance(arguments, str) and arguments.strip().startswith("{") else arguments
    if parser == "llama3_json":
        return json.dumps({"name": name, "parameters": args}, ensure_ascii=False)
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "\n</tool_call>"


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: a call's arguments as an object, not a text."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if calls:
            m = {**m, "tool_calls": [_call_for_template(c) for c in calls]}
        out.append(m)
    return out


def _call_for_template(call: dict[str, Any]) -> dict[str, Any]:
    fn = dict(call.get("function") or {})
    if isinstance(fn.get("arguments"), str):
        with contextlib.suppress(ValueError):
            fn["arguments"] = json.loads(fn["arguments"])
    return {**call, "function": fn}


def _tool(entry: Any, i: int, legacy: bool) -> Tool:
    if not isinstance(entry, dict):
        raise InvalidInput("a tool is an object", _where(i, legacy), status=400)
    fn: Any = entry
    if not legacy:
        if entry.get("type", "function") != "function":
            raise InvalidInput(
                f"tool type {entry.get('type')!r} is not served; only `function`", f"tools[{i}].type", status=400
            )
        fn = entry.get("function")
        if not isinstance(fn, dict):
            raise InvalidInput("a function tool needs `function`: {name, parameters}", f"tools[{i}].function", 400)
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            "a tool needs a `name` of letters, digits, _ . or - (at most 64)", _where(i, legacy, "name"), status=400
        )
    parameters = fn.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise InvalidInput("`parameters` must be a JSON schema object", _where(i, legacy, "parameters"), 400)
    strict = fn.get("strict") is True
    check(Constraint("json", parameters, _where(i, legacy, "parameters"), strict=strict))
    return Tool(name, str(fn.get("description") or ""), parameters, strict)


def _choice(value: Any, param: str, legacy: bool) -> tuple[Literal["none", "auto", "required"], str | None]:
    if value is None or value == "auto":
        return "auto", None
    if value == "none":
        return "none", None
    if value == "required" and not legacy:
        return "required", None
    if isinstance(value, dict):
        name = value.get("name") if legacy else (value.get("function") or {}).get("name")
        if (legacy or value.get("type") == "function") and isinstance(name, str):
            return "required", name
    shape = '{"name": ...}' if legacy else '{"type": "function", "function": {"name": ...}}'
    allowed = '"none", "auto"' + ("" if legacy else ', "required"')
    raise InvalidInput(f"{param} must be {allowed} or {shape}", param, status=400)


def _where(i: int, legacy: bool, key: str | None = None) -> str:
    base = f"functions[{i}]" if legacy else f"tools[{i}].function"
    return f"{base}.{key}" if key else (f"functions[{i}]" if legacy else f"tools[{i}]")


def _rebase(schema: Any, base: str) -> Any:
    """A schema moved under `base`: its own references (`#...`) now point there."""
    if isinstance(schema, dict):
        return {
            k: (base + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebase(v, base))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(v, base) for v in schema]
    return schema


def history_message(role: str, content: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A message of the history as a prompt takes it: calls and their results kept, the
    legacy `function_call` and `function` messages as tool calls and `tool` messages."""
    out: dict[str, Any] = {"role": "tool" if role == "function" else role, "content": content}
    calls = raw.get("tool_calls")
    legacy = raw.get("function_call")
    if not calls and isinstance(legacy, dict):
        calls = [{"id": "call_0", "type": "function", "function": legacy}]
    if calls:
        out["tool_calls"] = calls
    for key in ("tool_call_id", "name"):
        if raw.get(key):
            out[key] = raw[key]
    return out
