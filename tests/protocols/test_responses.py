"""`/v1/responses` without a server: the request turned into chat's (items, parameter names),
the answer and the stream events from a custom `complete` (each valid against the official
components, a failure after the start a `response.failed`), and the API process's store
(bounded LRU, history written into `input`, unknown ids a 400 naming the parameter)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from servectl.outcome import Failure
from servectl.protocols.openai.adapters import ChatCompletions
from servectl.protocols.openai.lm import HandlerLM
from servectl.protocols.openai.responses import Responses
from servectl.protocols.openai.responses_input import ResponsesRequest, messages_of, responses_param
from servectl.protocols.openai.responses_store import ResponsesRelay, ResponseStore, Stored
from servectl.sdk import END, InvalidInput, Sampling, ToolCall

jsonschema = pytest.importorskip("jsonschema")

from support.openai_spec import RESPONSE_EVENTS, load, validator  # noqa: E402

_SCHEMAS = load()[1]


def valid(component: str, body: dict[str, Any]) -> None:
    errors = [e.message[:200] for e in validator(component, _SCHEMAS).iter_errors(body)]
    assert not errors, (component, errors, body)


class Handler:
    """Says "hello world"; with tools, a little text and a call; "fail" in the prompt: fails
    after its first piece."""

    @staticmethod
    def complete(prompt: str, sampling: Sampling) -> Iterator[str | ToolCall]:
        if "fail" in prompt:
            yield "so far"
            raise RuntimeError("broken")
        if sampling.tools and sampling.tool_choice != "none":
            yield "let me look "
            yield ToolCall(sampling.tools[0].name, {"q": "x"})
            return
        yield from ("hello", " world")


def run(body: dict[str, Any]) -> Any:
    """The adapter's answer: a Response, or the stream's events (END dropped)."""
    adapter = Responses(ChatCompletions(HandlerLM(Handler(), 16, 8), "m"))
    job = adapter.generation_job(adapter.decode(ResponsesRequest.model_validate({"model": "m", **body})))
    events: list[Any] = []
    for _ in range(20):
        if job.engine.busy:
            job.engine.step()
        entry = job.progress()
        if entry is None:
            continue
        if not isinstance(entry, list):
            return entry.value
        events += entry
        if events and events[-1] is END:
            return events[:-1]
    raise AssertionError("no end")


def test_items_become_chat_messages() -> None:
    items = [
        {"role": "developer", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "c", "annotations": []}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}", "id": "fc_1"},
        {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "1"}]},
        {"type": "function_call_output", "call_id": "call_2", "output": "2"},
    ]
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    assert messages_of(items) == [
        {"role": "developer", "content": "ab"},
        {"role": "assistant", "content": "c", "tool_calls": calls},  # the calls join the assistant's turn
        {"role": "tool", "tool_call_id": "call_1", "content": "1"},
        {"role": "tool", "tool_call_id": "call_2", "content": "2"},
    ]
    assert messages_of("hi") == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("chat", "responses"),
    [
        ("messages", "input"),
        ("messages.2.content", "input.2.content"),
        ("max_completion_tokens", "max_output_tokens"),
        ("response_format.json_schema.schema", "text.format.schema"),
        ("response_format.type", "text.format.type"),
        ("tools[3].function.parameters", "tools[3].parameters"),
        ("tool_choice", "tool_choice"),
    ],
)
def test_chat_parameter_names_are_renamed(chat: str, responses: str) -> None:
    assert responses_param(chat) == responses


def test_whole_answers_text_and_calls() -> None:
    text = run({"input": "hi", "instructions": "be nice", "metadata": {"a": "b"}})
    valid("Response", text)
    assert text["status"] == "completed" and text["output"][0]["content"][0]["text"] == "hello world"
    assert text["instructions"] == "be nice" and text["metadata"] == {"a": "b"}
    tool = {"type": "function", "name": "look", "parameters": {"type": "object"}}
    called = run({"input": "hi", "tools": [tool]})
    valid("Response", called)
    assert [item["type"] for item in called["output"]] == ["message", "function_call"]
    call = called["output"][1]
    assert (
        call["name"] == "look" and json.loads(call["arguments"]) == {"q": "x"} and call["call_id"].startswith("call_")
    )
    assert called["tools"] == [{**tool, "description": None, "strict": False}]
    cut = run({"input": "hi", "max_output_tokens": 1})
    valid("Response", cut)
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["output"][0]["status"] == "incomplete" and cut["usage"]["output_tokens"] == 1


def test_stream_events_in_order() -> None:
    tool = {"type": "function", "name": "look", "parameters": {"type": "object"}}
    events = run({"input": "hi", "tools": [tool], "stream": True})
    for event in events:
        valid(RESPONSE_EVENTS[event["type"]], event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["name"] == "look"
    assert events[8]["output_index"] == 1 and events[9]["item_id"] == final["output"][1]["id"]


def test_failure_after_the_start_is_response_failed() -> None:
    events = run({"input": "fail", "stream": True})
    for event in events:
        valid(RESPONSE_EVENTS[event["type"]], event)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "the model failed while answering"}
    with pytest.raises(RuntimeError):
        run({"input": "fail"})  # not streamed: the error answer, with its status


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0].type"),
        ({"input": "x", "tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
        ({"input": "x", "tool_choice": {"type": "mcp"}}, "tool_choice"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "p"}, "x": 1}}, "text.x"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "p", "schema": []}}}, "text.format.schema"),
    ],
)
def test_bad_input_names_the_responses_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        run(body)
    assert refused.value.field == param and refused.value.status == 400


def test_store_is_a_bounded_lru() -> None:
    store = ResponseStore(max_responses=2, max_bytes=100)
    for name in ("a", "b"):
        store.put(name, Stored(b"{}", "m", b"[]", 10))
    assert store.get("a") is not None  # a is now the most recent
    store.put("c", Stored(b"{}", "m", b"[]", 10))
    assert list(store.entries) == ["a", "c"] and store.bytes == 20
    store.put("big", Stored(b"{}", "m", b"[]", 90))
    assert list(store.entries) == ["c", "big"] and store.bytes == 100
    assert store.delete("big") and not store.delete("big") and store.bytes == 10
    store.put("huge", Stored(b"{}", "m", b"[]", 101))  # larger than the whole store: not kept
    assert not store.entries and store.bytes == 0


def _answer(response_id: str, output: list[Any], status: str = "completed") -> bytes:
    return orjson.dumps({"id": response_id, "object": "response", "status": status, "output": output})


def test_relay_keeps_answers_and_writes_the_history_into_input() -> None:
    relay = ResponsesRelay(ResponseStore(), "m")
    first = relay.prepare(orjson.dumps({"model": "m", "input": "hi"}))
    assert not isinstance(first, Failure) and first.keep is not None
    said = [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "yo"}]}]
    first.keep(_answer("resp_1", said))
    second = relay.prepare(
        orjson.dumps({"model": "m", "input": [{"role": "user", "content": "again"}], "previous_response_id": "resp_1"})
    )
    assert not isinstance(second, Failure) and second.keep is not None
    sent = orjson.loads(second.body)
    assert sent["input"] == [{"role": "user", "content": "hi"}, *said, {"role": "user", "content": "again"}]
    assert sent["previous_response_id"] == "resp_1"  # echoed by the worker
    only = relay.prepare(orjson.dumps({"model": "m", "previous_response_id": "resp_1"}))  # input is optional
    assert not isinstance(only, Failure) and len(orjson.loads(only.body)["input"]) == 2
    # a stream is kept from its last event; the events before it and failed responses are not
    second.keep(b'{"type":"response.created","sequence_number":0,"response":{"id":"resp_2","status":"in_progress"}}')
    assert relay.store.get("resp_2") is None
    done = {"type": "response.completed", "sequence_number": 9, "response": orjson.loads(_answer("resp_2", []))}
    second.keep(orjson.dumps(done))
    stored = relay.store.get("resp_2")
    assert stored is not None and len(orjson.loads(stored.history)) == 3
    assert orjson.loads(stored.body)["id"] == "resp_2"
    relay.prepare(orjson.dumps({"input": "x"})).keep(_answer("resp_3", [], status="failed"))  # type: ignore[union-attr]
    assert relay.store.get("resp_3") is None


def test_relay_refuses_unknown_ids_and_keeps_nothing_unstored() -> None:
    relay = ResponsesRelay(ResponseStore(), "m")
    unkept = relay.prepare(orjson.dumps({"input": "x", "store": False}))
    assert not isinstance(unkept, Failure) and unkept.keep is None
    refused = relay.prepare(orjson.dumps({"input": "x", "previous_response_id": "resp_gone"}))
    assert isinstance(refused, Failure) and refused.status == 400
    assert refused.detail[0]["loc"] == ["previous_response_id"] and "resp_gone" in refused.message
    assert isinstance(relay.prepare(orjson.dumps({"previous_response_id": "resp_gone"})), Failure)
    for odd in (b"[1]", b"not json", b'{"input": 3}'):
        passed = relay.prepare(odd)
        assert not isinstance(passed, Failure) and passed.body == odd  # the worker's validation names it
