"""Structured outputs and tool calling through the clients LLM applications use: LangChain's
`with_structured_output` (json_schema, function_calling, json_mode) and `bind_tools` with an
agent loop of two calls, and litellm's `tools=`, against the tiny random GPT-2 (the grammar
makes its answers parse)."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest

pytest.importorskip("torch")
pytest.importorskip("llguidance")
pytest.importorskip("langchain_openai")
jsonschema = pytest.importorskip("jsonschema")

from pydantic import BaseModel, Field  # noqa: E402

from support.llm_tools import MODEL, gpt2_tools_spec, long_gpt2  # noqa: E402


class Pet(BaseModel):
    """A pet."""

    name: str = Field(max_length=6)
    kind: Literal["cat", "dog", "fish"]
    legs: int = Field(ge=0, le=8)


@pytest.fixture(scope="module")
def url(shared_serve, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    return str(shared_serve(gpt2_tools_spec(long_gpt2(tmp_path_factory.getbasetemp()))).url) + "/v1"


def chat_model(url: str, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=url, api_key="none", model=MODEL, max_retries=0, **{"max_tokens": 200, **options})


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output_into_a_pydantic_model(url, method) -> None:
    for seed in (1, 2):
        pet = chat_model(url, seed=seed).with_structured_output(Pet, method=method).invoke("Describe a pet.")
        assert isinstance(pet, Pet)


def test_langchain_json_mode_gives_a_dict(url) -> None:
    llm = chat_model(url, temperature=0).with_structured_output(None, method="json_mode")
    answer = llm.invoke("Answer in JSON.")
    assert isinstance(answer, dict)


def test_langchain_agent_loop_of_two_tool_calls(url) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    tools = {"add": add, "multiply": multiply}
    chat = chat_model(url, seed=3)
    caller = chat.bind_tools(list(tools.values()), tool_choice="required", parallel_tool_calls=False)
    messages: list[Any] = [HumanMessage("What is (3 + 4) * 5?")]
    for _ in range(2):
        ai = caller.invoke(messages)
        assert len(ai.tool_calls) == 1 and ai.tool_calls[0]["name"] in tools
        assert ai.response_metadata["finish_reason"] == "tool_calls"
        messages.append(ai)
        for call in ai.tool_calls:
            result = tools[call["name"]].invoke(call["args"])
            messages.append(ToolMessage(str(result), tool_call_id=call["id"]))
    final = chat.bind_tools(list(tools.values()), tool_choice="none").invoke(messages, max_tokens=8)
    assert isinstance(final.content, str) and not final.tool_calls


def test_litellm_tools(url, monkeypatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of its price list at import
    litellm = pytest.importorskip("litellm")
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
                "required": ["city", "unit"],
            },
        },
    }
    reply = litellm.completion(
        model=f"openai/{MODEL}",
        api_base=url,
        api_key="none",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[weather],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=200,
        seed=1,
    )
    assert reply.choices[0].finish_reason == "tool_calls"
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), weather["function"]["parameters"])
