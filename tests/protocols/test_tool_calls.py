"""Tool calls in a model's text, without a server: both parsers on whole answers and on
answers streamed a character at a time, and the grammars that force calls in each format."""

from __future__ import annotations

import json

import pytest

from servectl.protocols.openai.tool_calls import CallReader, split_hermes, split_llama3
from servectl.protocols.openai.tools import ToolFields, call_constraint, plan_of, render_plain
from servectl.sdk import InvalidInput

HERMES = (
    'Sure. <tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>\n<tool_call>{"name":"f","arguments":{}}'
)
LLAMA = '<|python_tag|>{"name": "add", "parameters": {"a": 1}}; {"name": "f", "parameters": {}}'
TOOLS = [
    {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {}}}}},
    {"type": "function", "function": {"name": "f"}},
]


def test_whole_answers() -> None:
    content, calls = split_hermes(HERMES)
    assert content.strip() == "Sure." and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("add", {"a": 1}),
        ("f", {}),
    ]
    content, calls = split_llama3(LLAMA)
    assert content == "" and [c.name for c in calls] == ["add", "f"]
    assert split_llama3('{"not": "a call"}') == ('{"not": "a call"}', [])
    assert split_hermes("<tool_call>{broken</tool_call>")[1] == []  # what does not parse stays text


@pytest.mark.parametrize(("parser", "text"), [("hermes", HERMES), ("llama3_json", LLAMA), ("hermes", "just text")])
def test_streamed_a_character_at_a_time_reads_as_whole(parser: str, text: str) -> None:
    reader = CallReader(parser)
    content, calls = "", []
    for i, ch in enumerate(text):
        piece, found = reader.feed(ch, last=i == len(text) - 1)
        content += piece
        calls += found
        assert "<tool" not in piece, "a tag never leaks into the content"
    whole = (split_hermes if parser == "hermes" else split_llama3)(text)
    assert content.strip() == whole[0].strip()
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in whole[1]]


@pytest.mark.parametrize("parser", ["hermes", "llama3_json"])
def test_forcing_grammars_compile_in_both_formats(parser: str) -> None:
    pytest.importorskip("llguidance")
    from servectl.runners.grammar import check

    for choice in ("required", {"type": "function", "function": {"name": "f"}}):
        plan = plan_of(ToolFields(tools=TOOLS, tool_choice=choice))
        assert plan is not None
        check(call_constraint(plan, parser))


def test_the_built_in_template_lists_tools_and_replays_calls() -> None:
    plan = plan_of(ToolFields(tools=TOOLS))
    assert plan is not None and plan.choice == "auto" and plan.parallel
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    prompt = render_plain(history, plan.schemas(), "hermes")
    assert prompt.startswith("system: You may call these functions: [") and prompt.endswith("tool: 42\nassistant:")
    assert 'assistant: <tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>' in prompt


def test_tool_choice_without_such_a_tool_is_refused() -> None:
    with pytest.raises(InvalidInput) as bad:
        plan_of(ToolFields(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "g"}}))
    assert bad.value.field == "tool_choice" and bad.value.status == 400
    legacy = plan_of(ToolFields(functions=[{"name": "f"}], function_call="auto"))
    assert legacy is not None and legacy.legacy and not legacy.parallel
