"""`POST /v1/responses` (OpenAI's Responses API) end to end: the official `openai` client's
`responses.create` and `responses.stream` and LangChain's `use_responses_api=True` against a
server of the tiny random GPT-2 (and a custom `complete` handler), every body and stream event
checked against the official component schemas (Response, the stream events); stored
responses and `previous_response_id`; bad input a 400 naming the parameter."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, Field

openai = pytest.importorskip("openai")
pytest.importorskip("torch")
pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

from support.llm_tools import MODEL, gpt2_tools_spec, long_gpt2, tools_handler_spec  # noqa: E402
from support.openai_spec import RESPONSE_EVENTS, load, validator  # noqa: E402

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}
_SCHEMAS = load()[1]


class Person(BaseModel):
    name: str = Field(max_length=8)
    age: int = Field(ge=0, le=130)


_VALIDATORS: dict[str, Any] = {}


def check(component: str, body: dict[str, Any]) -> None:
    """`body` is valid against the official component."""
    found = _VALIDATORS.get(component)
    if found is None:
        found = _VALIDATORS[component] = validator(component, _SCHEMAS)
    errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in found.iter_errors(body)]
    assert not errors, (component, errors, json.dumps(body)[:1500])


@pytest.fixture(scope="module")
def gpt2(shared_serve, tmp_path_factory) -> tuple[Any, Any]:  # type: ignore[no-untyped-def]
    server = shared_serve(gpt2_tools_spec(long_gpt2(tmp_path_factory.getbasetemp())))
    return server, openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def post(server: Any, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """A whole answer (checked: a Response, or an error), as JSON."""
    answer = httpx.post(server.url + "/v1/responses", json={"model": MODEL, **body}, timeout=120)
    assert answer.status_code == status, answer.text
    check("Response" if status == 200 else "ErrorResponse", answer.json())
    return answer.json()  # type: ignore[no-any-return]


def events(server: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed answer's events, each checked against its component."""
    answer = httpx.post(server.url + "/v1/responses", json={"model": MODEL, **body, "stream": True}, timeout=120)
    assert answer.status_code == 200, answer.text
    data = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    out = [json.loads(line) for line in data[:-1]]
    for event in out:
        check(RESPONSE_EVENTS[event["type"]], event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def output_text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message" for part in item["content"])


def test_text_with_instructions_through_the_official_client(gpt2) -> None:
    server, client = gpt2
    response = client.responses.create(
        model=MODEL, input="Say hello.", instructions="Be brief.", max_output_tokens=12, temperature=0
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.instructions == "Be brief."
    assert response.output[0].type == "message" and response.output_text == response.output[0].content[0].text
    usage = response.usage
    assert usage is not None and 1 <= usage.output_tokens <= 12
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    whole = post(
        server, {"input": "Say hello.", "instructions": "Be brief.", "max_output_tokens": 12, "temperature": 0}
    )
    assert output_text(whole) == response.output_text  # greedy: the same text again
    # the instructions are in the prompt: more input tokens than without them
    bare = post(server, {"input": "Say hello.", "max_output_tokens": 1})
    assert whole["usage"]["input_tokens"] > bare["usage"]["input_tokens"]


def test_max_output_tokens_cut_is_incomplete(gpt2) -> None:
    server, _ = gpt2
    for body in ({"input": "Tell a long story.", "max_output_tokens": 2, "temperature": 0},):
        whole = post(server, body)
        assert whole["usage"]["output_tokens"] <= 2
        if whole["usage"]["output_tokens"] == 2:  # (a random model may end sooner)
            assert whole["status"] == "incomplete" and whole["incomplete_details"] == {"reason": "max_output_tokens"}
        streamed = events(server, body)
        assert streamed[-1]["type"] == f"response.{whole['status']}"


def test_message_items_and_text_parts(gpt2) -> None:
    server, client = gpt2
    items = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "developer", "content": [{"type": "input_text", "text": "Be kind."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
        {"role": "user", "content": "And now?"},
    ]
    response = client.responses.create(model=MODEL, input=items, max_output_tokens=4)
    assert response.status in ("completed", "incomplete")
    short = post(server, {"input": "And now?", "max_output_tokens": 1})
    assert response.usage is not None and response.usage.input_tokens > short["usage"]["input_tokens"]


def test_json_schema_format_parses(gpt2) -> None:
    server, client = gpt2
    fmt = {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}
    for temperature in (0, 1):
        response = client.responses.create(
            model=MODEL, input="Describe a person.", text={"format": fmt}, temperature=temperature, max_output_tokens=90
        )
        jsonschema.validate(json.loads(response.output_text), PERSON)
    whole = post(server, {"input": "Describe a person.", "text": {"format": fmt}, "max_output_tokens": 90})
    assert whole["text"]["format"]["name"] == "person" and whole["text"]["format"]["strict"] is True
    jsonschema.validate(json.loads(output_text(whole)), PERSON)
    streamed = events(server, {"input": "A person?", "text": {"format": fmt}, "max_output_tokens": 90})
    done = streamed[-1]["response"]
    jsonschema.validate(json.loads(output_text(done)), PERSON)


def test_same_text_as_chat_in_one_batch(gpt2) -> None:
    """A response and the chat completion it converts to, sent together (one continuous batch):
    greedy, the same text and the same token counts."""
    server, _ = gpt2
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    ask = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]

    async def both() -> tuple[Any, Any]:
        response = client.responses.create(
            model=MODEL, instructions="Be brief.", input="Say hello.", temperature=0, max_output_tokens=10
        )
        chat = client.chat.completions.create(model=MODEL, messages=ask, temperature=0, max_tokens=10)
        return await asyncio.gather(response, chat)

    response, chat = asyncio.run(both())
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.output_tokens == chat.usage.completion_tokens


def test_parse_into_a_pydantic_model(gpt2) -> None:
    _, client = gpt2
    parsed = client.responses.parse(model=MODEL, input="Describe a person.", text_format=Person, max_output_tokens=90)
    assert isinstance(parsed.output_parsed, Person)


def test_tool_loop_of_two_steps_with_function_call_output(gpt2) -> None:
    """A forced call, its result sent back as `function_call_output` (with the items given
    again, then through `previous_response_id`), and an answer."""
    server, client = gpt2
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(
        model=MODEL,
        input=ask,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=200,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and first.status == "completed"
    for call in calls:
        assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id.startswith("fc_")
        jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    results = [{"type": "function_call_output", "call_id": c.call_id, "output": '{"temp": 21}'} for c in calls]
    again = [*ask, *[item.model_dump(exclude_none=True) for item in first.output], *results]
    second = client.responses.create(model=MODEL, input=again, tools=[WEATHER], tool_choice="none", max_output_tokens=8)
    assert second.status in ("completed", "incomplete") and second.output[0].type == "message"
    chained = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=results,
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=8,
    )
    assert chained.previous_response_id == first.id
    assert chained.usage is not None and second.usage is not None
    assert chained.usage.input_tokens == second.usage.input_tokens  # the same history, from the store
    choice = {"type": "function", "name": "get_weather"}
    named = post(server, {"input": ask, "tools": [WEATHER], "tool_choice": choice, "max_output_tokens": 200})
    assert [item["type"] for item in named["output"]] == ["function_call"]
    assert named["tool_choice"] == {"type": "function", "name": "get_weather"}


def test_streamed_tool_call_events(gpt2) -> None:
    server, _ = gpt2
    body = {"input": "Weather in Rome?", "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False}
    streamed = events(server, {**body, "max_output_tokens": 200})
    kinds = [e["type"] for e in streamed]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds[2:-1] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    done = streamed[-2]["item"]
    assert done["name"] == "get_weather" and streamed[-1]["response"]["output"] == [done]
    jsonschema.validate(json.loads(done["arguments"]), WEATHER["parameters"])


def test_stream_through_the_official_client(gpt2) -> None:
    server, client = gpt2
    with client.responses.stream(model=MODEL, input="Once upon a time", max_output_tokens=10) as stream:
        seen = list(stream)
        final = stream.get_final_response() if seen[-1].type == "response.completed" else seen[-1].response
    kinds = [e.type for e in seen]
    numbers = [e.sequence_number for e in seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    deltas = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    assert deltas and final.output_text == deltas == next(e.text for e in seen if e.type == "response.output_text.done")
    # create(stream=True): the raw events, the same order
    raw = list(client.responses.create(model=MODEL, input="Hello", max_output_tokens=6, stream=True))
    assert [e.sequence_number for e in raw] == list(range(len(raw)))
    assert "".join(e.delta for e in raw if e.type == "response.output_text.delta") == raw[-1].response.output_text
    # the schema check of every event, over raw SSE
    streamed = events(server, {"input": "Hello", "max_output_tokens": 6, "instructions": "Short."})
    assert streamed[-1]["response"]["usage"]["output_tokens"] >= 1


def test_store_and_previous_response_id(gpt2) -> None:
    server, client = gpt2
    first = client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=4)
    fetched = httpx.get(f"{server.url}/v1/responses/{first.id}", timeout=10)
    assert fetched.status_code == 200 and fetched.json()["id"] == first.id
    check("Response", fetched.json())
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, input="What is my name?", max_output_tokens=4
    )
    alone = post(server, {"input": "What is my name?", "max_output_tokens": 1})
    assert second.previous_response_id == first.id
    assert second.usage is not None and second.usage.input_tokens > alone["usage"]["input_tokens"]
    # a stream is kept too, and continued from
    streamed = events(server, {"input": "Hi", "max_output_tokens": 3})
    kept = streamed[-1]["response"]["id"]
    third = post(server, {"previous_response_id": kept, "input": "Again", "max_output_tokens": 2})
    assert third["previous_response_id"] == kept
    # store: false is not kept: continuing from it is a 400 naming the parameter
    unkept = client.responses.create(model=MODEL, input="Forget me.", store=False, max_output_tokens=2)
    assert unkept.store is False
    assert httpx.get(f"{server.url}/v1/responses/{unkept.id}", timeout=10).status_code == 404
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, previous_response_id=unkept.id, input="Hi", max_output_tokens=2)
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "previous_response_id"
    assert error["code"] == "previous_response_not_found" and unkept.id in error["message"]
    gone = post(server, {"previous_response_id": "resp_nope", "input": "x"}, status=400)
    assert gone["error"]["param"] == "previous_response_id"
    # deleted: gone
    assert httpx.delete(f"{server.url}/v1/responses/{first.id}", timeout=10).json()["deleted"] is True
    assert httpx.get(f"{server.url}/v1/responses/{first.id}", timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "frobnicate": 1}, "frobnicate"),
        ({"input": []}, "input"),
        ({"input": [{"type": "image_generation_call"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "function_call_output", "output": "1"}]}, "input[0].call_id"),
        ({"input": "x", "tools": [{"type": "function", "parameters": {}}]}, "tools[0].name"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "schema": PERSON}}}, "text.format.name"),
        (
            {"input": "x", "text": {"format": {"type": "json_schema", "name": "p", "schema": {"type": "nope"}}}},
            "text.format.schema",
        ),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(gpt2, body, param) -> None:
    server, _ = gpt2
    error = post(server, body, status=400)["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


def test_openai_fields_not_used_are_accepted(gpt2) -> None:
    server, _ = gpt2
    body = {"input": "x", "max_output_tokens": 1, "reasoning": {"effort": "low"}, "include": [], "truncation": "auto"}
    whole = post(server, {**body, "metadata": {"k": "v"}, "user": "u", "service_tier": "auto", "top_logprobs": 0})
    assert whole["metadata"] == {"k": "v"}


def _answered(server: Any) -> float:
    """servectl_requests_total for 200s of /v1/responses on the model."""
    wanted = f'servectl_requests_total{{model="{MODEL}",route="/v1/responses",status="200"}}'
    lines = httpx.get(server.url + "/metrics", timeout=10).text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(wanted))


def test_documented_and_counted(gpt2) -> None:
    server, _ = gpt2
    document = httpx.get(server.url + "/openapi.json", timeout=10).json()
    operation = document["paths"]["/v1/responses"]["post"]
    assert operation["operationId"] == "create_response" and operation["x-servectl-stream"]
    before, answered = httpx.get(server.url + "/stats", timeout=10).json()["models"][MODEL], _answered(server)
    whole = post(server, {"input": "count me", "max_output_tokens": 2})
    after = httpx.get(server.url + "/stats", timeout=10).json()["models"][MODEL]
    assert _answered(server) == answered + 1
    assert after["prompt_tokens"] - before["prompt_tokens"] == whole["usage"]["input_tokens"]
    assert after["completion_tokens"] - before["completion_tokens"] == whole["usage"]["output_tokens"]


def test_langchain_use_responses_api(gpt2) -> None:
    pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    server, _ = gpt2
    options: dict[str, Any] = {"base_url": server.url + "/v1", "api_key": "none", "model": MODEL, "max_retries": 0}
    llm = ChatOpenAI(**options, use_responses_api=True, max_tokens=12)
    answer = llm.invoke("Say hello.")
    assert isinstance(answer.text, str) and answer.response_metadata["id"].startswith("resp_")
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] >= 1

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    caller = ChatOpenAI(**options, use_responses_api=True, max_tokens=200).bind_tools(
        [add], tool_choice="required", parallel_tool_calls=False
    )
    messages: list[Any] = [HumanMessage("What is 3 + 4?")]
    ai = caller.invoke(messages)
    assert len(ai.tool_calls) == 1 and ai.tool_calls[0]["name"] == "add"
    messages += [ai, ToolMessage(str(add.invoke(ai.tool_calls[0]["args"])), tool_call_id=ai.tool_calls[0]["id"])]
    final = llm.bind_tools([add], tool_choice="none").invoke(messages)
    assert isinstance(final.text, str) and not final.tool_calls
    person = ChatOpenAI(**options, use_responses_api=True, max_tokens=90).with_structured_output(Person)
    assert isinstance(person.invoke("Describe a person."), Person)


def test_custom_complete_handler_answers_responses(shared_serve) -> None:
    server = shared_serve(tools_handler_spec())
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    text = client.responses.create(model="tools-llm", input="hi")
    assert text.output_text == "no tools" and text.status == "completed"
    tool = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    called = client.responses.create(model="tools-llm", input="hi", tools=[tool], tool_choice="required")
    calls = [item for item in called.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "lookup"
    assert json.loads(calls[0].arguments)["choice"] == "required"
    fmt = {"type": "json_schema", "name": "person", "schema": PERSON}
    shaped = client.responses.create(model="tools-llm", input="hi", text={"format": fmt})
    assert json.loads(shaped.output_text) == {"name": "person", "strict": False, "keys": ["age", "name"]}
    with client.responses.stream(model="tools-llm", input="hi", tools=[tool], tool_choice="required") as stream:
        kinds = [e.type for e in stream]
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
