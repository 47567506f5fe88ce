"""Structured outputs and tool calling end to end, with the official `openai` client against
a server of the tiny random GPT-2: whatever such a model would say, the answers parse and
validate, calls name offered functions with valid arguments, and bad input is a 400 naming
the field. Constrained, tool and free requests in one continuous batch each answer as alone."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Literal

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("torch")
pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

from pydantic import BaseModel, Field  # noqa: E402

from support.llm_tools import MODEL, gpt2_tools_spec, long_gpt2, tools_handler_spec  # noqa: E402

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 2},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "maximum": 999}, "b": {"type": "integer", "maximum": 999}},
            "required": ["a", "b"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def gpt2(shared_serve, tmp_path_factory):  # type: ignore[no-untyped-def]
    path = long_gpt2(tmp_path_factory.getbasetemp())
    server = shared_serve(gpt2_tools_spec(path))
    return server, openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def check_calls(calls: Any, tools: list[dict]) -> None:
    """Every call names an offered function, with arguments valid against its parameters."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert calls
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


def test_json_schema_parses_streamed_or_not(gpt2) -> None:
    _, client = gpt2
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for seed in range(3):
        kw: dict[str, Any] = {"model": MODEL, "messages": ASK, "response_format": fmt, "seed": seed, "max_tokens": 90}
        whole = client.chat.completions.create(**kw)
        choice = whole.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), PERSON)
        chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_parse_into_a_pydantic_model(gpt2) -> None:
    _, client = gpt2

    class Pet(BaseModel):
        name: str = Field(max_length=6)
        kind: Literal["cat", "dog", "fish"]
        legs: int = Field(ge=0, le=8)

    reply = client.chat.completions.parse(model=MODEL, messages=ASK, response_format=Pet, seed=1, max_tokens=60)
    pet = reply.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.kind in ("cat", "dog", "fish")


def test_the_extensions_and_regex(gpt2) -> None:
    _, client = gpt2
    done = client.completions.create
    choice = done(model=MODEL, prompt="Mood:", max_tokens=10, extra_body={"guided_choice": ["happy", "sad"]})
    assert choice.choices[0].text in ("happy", "sad") and choice.choices[0].finish_reason == "stop"
    regex = r"[A-Z]{2}-[0-9]{3}"
    for body in (
        {"guided_regex": regex},
        {"structured_outputs": {"regex": regex}},
        {"response_format": {"type": "regex", "regex": regex}},
    ):
        text = done(model=MODEL, prompt="Code:", max_tokens=10, extra_body=body).choices[0].text
        assert re.fullmatch(regex, text), (body, text)
    grammar = 'root ::= "ok" | "no" [0-9]'
    text = done(model=MODEL, prompt="x", max_tokens=5, extra_body={"guided_grammar": grammar}).choices[0].text
    assert re.fullmatch(r"ok|no\d", text)
    answer = done(model=MODEL, prompt="x", max_tokens=60, seed=0, extra_body={"guided_json": PERSON}).choices[0]
    jsonschema.validate(json.loads(answer.text), PERSON)
    chat = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=10, extra_body={"structured_outputs": {"choice": ["yes", "no"]}}
    )
    assert chat.choices[0].message.content in ("yes", "no")


def test_json_object_is_a_json_object(gpt2) -> None:
    _, client = gpt2
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format={"type": "json_object"}, max_tokens=96, temperature=0
    )
    text, finish = reply.choices[0].message.content, reply.choices[0].finish_reason
    assert text.startswith("{")
    if finish == "stop":  # else cut by max_tokens, as OpenAI's would be
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}},
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": PERSON}}},
            "response_format.json_schema.name",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "strict": True, "schema": {"type": "array", "uniqueItems": True}},
                }
            },
            "response_format.json_schema.schema",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"guided_regex": "(unclosed"}, "guided_regex"),
        ({"response_format": {"type": "json_object"}, "guided_choice": ["a"]}, "guided_choice"),
        ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/nowhere"}}}]},
            "tools[0].function.parameters",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"description": "no name"}]}, "functions[0].name"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(gpt2, body, param) -> None:
    _, client = gpt2
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, extra_body=body)
    assert bad.value.body["param"] == param, bad.value.body
    assert bad.value.body["type"] == "invalid_request_error"


def test_tool_choice_required_named_and_auto(gpt2) -> None:
    _, client = gpt2
    tools = [WEATHER, ADD]
    for seed in range(3):
        required = client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=tools,
            tool_choice="required",
            seed=seed,
            max_tokens=200,
            parallel_tool_calls=False,
        )
        choice = required.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        check_calls(choice.message.tool_calls, tools)
        assert len(choice.message.tool_calls) == 1
        assert required.usage.completion_tokens > 10  # the call's tokens are counted
    named = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "add"}},
        max_tokens=120,
    )
    check_calls(named.choices[0].message.tool_calls, tools)
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["add"]
    auto = client.chat.completions.create(model=MODEL, messages=ASK, tools=tools, max_tokens=8, temperature=0)
    assert auto.choices[0].message.tool_calls is None and auto.choices[0].finish_reason == "length"


def test_parallel_calls_stream_as_tool_call_deltas(gpt2) -> None:
    _, client = gpt2
    tools = [WEATHER, ADD]
    kw: dict[str, Any] = {
        "model": MODEL,
        "messages": ASK,
        "tools": tools,
        "tool_choice": "required",
        "seed": 4,
        "max_tokens": 250,
    }
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert all(d.id.startswith("call_") and d.type == "function" for d in deltas)
    got = [(d.function.name, d.function.arguments) for d in deltas]
    assert got == [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls]
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    if whole.choices[0].finish_reason == "tool_calls":
        check_calls(whole.choices[0].message.tool_calls, tools)


def test_history_with_calls_and_results_and_legacy_functions(gpt2) -> None:
    _, client = gpt2
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], max_tokens=4)
    assert reply.choices[0].message.role == "assistant"
    legacy = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        functions=[WEATHER["function"]],
        function_call={"name": "get_weather"},
        max_tokens=200,
    )
    choice = legacy.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), WEATHER["function"]["parameters"])


def test_constrained_tool_and_free_rows_in_one_batch_answer_as_alone(gpt2) -> None:
    server, _ = gpt2
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    bodies = [
        {"response_format": fmt, "seed": 1},
        {"tools": [WEATHER, ADD], "tool_choice": "required", "seed": 2},
        {"seed": 3},
        {"extra_body": {"guided_choice": ["red", "green", "blue"]}, "seed": 4},
        {"tools": [WEATHER], "seed": 5},
    ]

    async def ask(client: Any, body: dict) -> Any:
        reply = await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=60, **body)
        return reply.choices[0].message.model_dump(), reply.usage.completion_tokens

    async def both() -> tuple[list, list]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        together = await asyncio.gather(*(ask(client, b) for b in bodies))
        alone = [await ask(client, b) for b in bodies]
        return list(together), alone

    together, alone = asyncio.run(both())
    strip = [(json.dumps({k: v for k, v in m.items() if k != "tool_calls"}), n) for m, n in together]
    assert strip == [(json.dumps({k: v for k, v in m.items() if k != "tool_calls"}), n) for m, n in alone]
    for (m1, _), (m2, _) in zip(together, alone, strict=True):  # call ids are new each time
        calls = [[(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"] or []] for m in (m1, m2)]
        assert calls[0] == calls[1]


def test_a_custom_complete_gets_the_tools_and_returns_a_call(shared_serve) -> None:
    server = shared_serve(tools_handler_spec())
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(
        model="tools-llm",
        messages=ASK,
        tools=[WEATHER, ADD],
        tool_choice={"type": "function", "function": {"name": "add"}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "add"
    seen = json.loads(choice.message.tool_calls[0].function.arguments)
    assert seen == {
        "tools": ["get_weather", "add"],
        "choice": "required",
        "named": "add",
        "parameters": ADD["function"]["parameters"],
    }
    chunks = list(client.chat.completions.create(model="tools-llm", messages=ASK, tools=[WEATHER], stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [d.function.name for d in deltas] == ["get_weather"] and deltas[0].id.startswith("call_")
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    text = client.chat.completions.create(model="tools-llm", messages=ASK, response_format=fmt)
    assert json.loads(text.choices[0].message.content) == {
        "name": "person",
        "strict": True,
        "keys": ["age", "name", "pets"],
    }


def test_tool_call_answers_match_the_official_schemas(gpt2) -> None:
    """Tool-call and structured answers, whole and streamed, against OpenAI's own document."""
    import httpx

    from support.openai_spec import load, validator

    server, _ = gpt2
    _, schemas = load()
    body = {
        "model": MODEL,
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": "required",
        "max_tokens": 200,
        "seed": 1,
    }
    whole = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert whole["choices"][0]["message"]["tool_calls"]
    assert not list(validator("CreateChatCompletionResponse", schemas).iter_errors(whole))
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    stream = validator("CreateChatCompletionStreamResponse", schemas)
    assert chunks and all(not list(stream.iter_errors(c)) for c in chunks)
    legacy = {**body, "functions": [WEATHER["function"]], "function_call": {"name": "get_weather"}}
    del legacy["tools"], legacy["tool_choice"]
    answer = httpx.post(server.url + "/v1/chat/completions", json=legacy, timeout=60).json()
    assert answer["choices"][0]["message"]["function_call"]["name"] == "get_weather"
    assert not list(validator("CreateChatCompletionResponse", schemas).iter_errors(answer))
