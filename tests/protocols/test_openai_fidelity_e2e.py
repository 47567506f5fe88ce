"""OpenAI fidelity over real servers (the tiny GPT-2, the echo handler): every /v1 answer
valid against the official OpenAPI component schemas, exact log-probabilities (bytes, the
end token, top_logprobs, text_offset), one choice per stream chunk, `echo`, and vLLM's
extensions, with the official `openai` client where it reaches them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("torch")
pytest.importorskip("jsonschema")

from support.openai_spec import RELAXED, load, validator  # noqa: E402
from support.specs import echo_llm_spec, gpt2_openai_spec  # noqa: E402

KEY = {"Authorization": "Bearer sk-test"}
EOS = "1"  # the tiny GPT-2's <|endoftext|>
UNICODE = ["Grüße aus Köln: “ok” ✓ naïve café", "日本語のテキスト", "émoji 🎉 and ü"]


@pytest.fixture(scope="module")
def gpt2(shared_serve, models) -> Iterator[tuple[Any, Any]]:  # type: ignore[no-untyped-def]
    server = shared_serve(gpt2_openai_spec(models))
    server.headers = KEY
    yield server, openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]", response.text[-200:]
    return [json.loads(line) for line in lines[:-1]]


def test_every_v1_body_matches_the_official_schemas(gpt2, shared_serve) -> None:
    """Answers, stream chunks and errors of every /v1 route, each checked against its
    component schema of openai/openai-openapi (the subset in tests/support)."""
    server, _ = gpt2
    note, schemas = load()
    assert "f85dbe223d40e1a31cba812ab2d755c7e98a92a3" in note and len(RELAXED) == 3
    chat = {"model": "tiny-gpt2", "messages": [{"role": "user", "content": UNICODE[0]}], "max_tokens": 6}
    text = {"model": "tiny-gpt2", "prompt": UNICODE[1], "max_tokens": 5}
    checked: list[tuple[str, dict[str, Any]]] = []  # (component, body)

    def post(path: str, body: dict[str, Any], component: str, status: int = 200, headers: Any = KEY) -> None:
        answer = httpx.post(server.url + path, json=body, headers=headers, timeout=60)
        assert answer.status_code == status, answer.text
        if body.get("stream") and status == 200:
            checked.extend((component, event) for event in _events(answer))
        else:
            checked.append((component if status == 200 else "ErrorResponse", answer.json()))

    chat_bodies: list[dict[str, Any]] = [
        {},
        {"n": 2, "temperature": 1, "seed": 3},
        {"logprobs": True, "top_logprobs": 3, "temperature": 0},
        {"stop": ["e"]},
        {"prompt_logprobs": 1, "min_tokens": 2},
    ]
    for extra in chat_bodies:
        post("/v1/chat/completions", {**chat, **extra}, "CreateChatCompletionResponse")
    stream = {"stream": True, "stream_options": {"include_usage": True}}
    for extra in ({}, {"n": 2, "logprobs": True, "top_logprobs": 2, "temperature": 1, "seed": 5}):
        post("/v1/chat/completions", {**chat, **stream, **extra}, "CreateChatCompletionStreamResponse")
    completion_bodies: list[dict[str, Any]] = [
        {},
        {"logprobs": 0},
        {"logprobs": 2, "n": 2, "temperature": 1, "seed": 1},
        {"echo": True},
        {"echo": True, "logprobs": 3},
        {"prompt": [UNICODE[0], UNICODE[2]], "ignore_eos": True, "logit_bias": {EOS: 100}, "logprobs": 1},
    ]
    for extra in completion_bodies:
        post("/v1/completions", {**text, **extra}, "CreateCompletionResponse")
    for extra in ({}, {"echo": True, "logprobs": 2, "n": 2, "temperature": 1, "seed": 2, **stream}):
        post("/v1/completions", {**text, "stream": True, **extra}, "CreateCompletionResponse")
    errors: list[tuple[str, dict[str, Any], int]] = [
        ("/v1/chat/completions", {**chat, "temperature": 5}, 400),
        ("/v1/chat/completions", {**chat, "model": "gpt-4o"}, 404),
        ("/v1/chat/completions", {**chat, "stream_options": {"include_usage": True}}, 400),
        ("/v1/completions", {**text, "best_of_n": 2}, 400),
        ("/v1/embeddings", {"model": "tiny-gpt2", "input": "x"}, 400),
        ("/v1/embeddings", {"model": "nope", "input": "x"}, 404),
        ("/v1/chat/completion", chat, 404),
    ]
    for path, body, status in errors:
        post(path, body, "ErrorResponse", status)
    post("/v1/completions", text, "ErrorResponse", 401, {"Authorization": "Bearer wrong"})
    for path, component in (("/v1/models", "ListModelsResponse"), ("/v1/models/tiny-gpt2", "Model")):
        checked.append((component, httpx.get(server.url + path, headers=KEY).json()))
    for method, path, status in (("GET", "/v1/models/gpt-4o", 404), ("GET", "/v1/completions", 405)):
        answer = httpx.request(method, server.url + path, headers=KEY)
        assert answer.status_code == status
        checked.append(("ErrorResponse", answer.json()))
    echo = shared_serve(echo_llm_spec())  # a custom handler: completions and embeddings
    for body in ({"input": ["a", "b"]}, {"input": "a", "encoding_format": "base64"}):
        checked.append(
            (
                "CreateEmbeddingResponse",
                httpx.post(echo.url + "/v1/embeddings", json={"model": "echo-llm", **body}).json(),
            )
        )
    answer = httpx.post(echo.url + "/v1/chat/completions", json={"model": "echo-llm", "messages": chat["messages"]})
    checked.append(("CreateChatCompletionResponse", answer.json()))

    failures = []
    for component, body in checked:
        for error in validator(component, schemas).iter_errors(body):
            failures.append(f"{component} at {list(error.absolute_path)}: {error.message} in {json.dumps(body)[:300]}")
    assert not failures, "\n".join(failures[:10])
    assert len(checked) > 40 and {c for c, _ in checked} == {
        "CreateChatCompletionResponse",
        "CreateChatCompletionStreamResponse",
        "CreateCompletionResponse",
        "CreateEmbeddingResponse",
        "ListModelsResponse",
        "Model",
        "ErrorResponse",
    }


def test_logprobs_are_exact_over_partial_characters(gpt2) -> None:
    """Seeded answers to non-ASCII prompts: the tokens' bytes make the text (tokens inside a
    character included), the end token is not among them; completions' top_logprobs hold
    the chosen token (k + 1 at most) and text_offset points into the text."""
    _, client = gpt2
    partial = 0
    for seed, prompt in enumerate(UNICODE * 3):
        reply = client.chat.completions.create(
            model="tiny-gpt2",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=12,
            temperature=1,
            seed=seed,
            logprobs=True,
            top_logprobs=2,
        )
        choice = reply.choices[0]
        content = choice.logprobs.content
        assert bytes(b for t in content for b in t.bytes).decode("utf-8", "replace") == choice.message.content
        assert len(content) == reply.usage.completion_tokens
        assert "<|endoftext|>" not in [t.token for t in content]
        partial += sum(t.token == "\ufffd" for t in content)
        assert choice.message.refusal is None
        for k in (0, 2):
            legacy = client.completions.create(
                model="tiny-gpt2", prompt=prompt, max_tokens=10, temperature=1, seed=seed, logprobs=k
            ).choices[0]
            lp = legacy.logprobs
            assert all(
                len(top) <= k + 1 and top[t] == v
                for t, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)
            )
            if k == 0:
                assert all(
                    top == {t: v} for t, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)
                )
            assert lp.text_offset == sorted(lp.text_offset) and all(
                0 <= at <= len(legacy.text) for at in lp.text_offset
            )
            for token, at in zip(lp.tokens, lp.text_offset, strict=True):
                shown = legacy.text[at : at + len(token) + 1]  # after malformed bytes: their U+FFFD first
                assert "\ufffd" in token or shown.startswith(token) or shown == "\ufffd" + token
    assert partial > 5, "the prompts make tokens that hold part of a character"
    # special tokens generated but skipped from the text: offsets stay inside it
    skipped = client.completions.create(
        model="tiny-gpt2", prompt="a", max_tokens=4, logprobs=1, logit_bias={EOS: 100}, extra_body={"ignore_eos": True}
    ).choices[0]
    assert skipped.text == "" and skipped.logprobs.text_offset == [0] * 4
    assert skipped.logprobs.tokens == ["<|endoftext|>"] * 4


def test_n_streams_one_choice_per_chunk_and_stream_options_needs_stream(gpt2) -> None:
    _, client = gpt2
    body = {"model": "tiny-gpt2", "prompt": "once", "max_tokens": 6, "temperature": 1, "seed": 9, "n": 3}
    whole = client.completions.create(**body)
    chunks = list(client.completions.create(**body, stream=True, stream_options={"include_usage": True}))
    assert all(len(c.choices) == 1 for c in chunks[:-1]) and chunks[-1].choices == []
    texts: dict[int, str] = {}
    for c in chunks[:-1]:
        texts[c.choices[0].index] = texts.get(c.choices[0].index, "") + c.choices[0].text
    assert [texts[i] for i in range(3)] == [c.text for c in whole.choices]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    chat = list(
        client.chat.completions.create(
            model="tiny-gpt2", messages=[{"role": "user", "content": "hi"}], max_tokens=4, n=2, stream=True
        )
    )
    assert all(len(c.choices) == 1 for c in chat) and {c.choices[0].index for c in chat} == {0, 1}
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="tiny-gpt2", prompt="x", stream_options={"include_usage": True})
    assert refused.value.body["param"] == "stream_options" and "stream" in refused.value.body["message"]


def test_echo_with_and_without_logprobs(gpt2) -> None:
    _, client = gpt2
    prompt = UNICODE[0]
    plain = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=5, temperature=0)
    echoed = client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=5, temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + plain.choices[0].text and echoed.usage == plain.usage
    scored = client.completions.create(
        model="tiny-gpt2", prompt=prompt, max_tokens=5, temperature=0, echo=True, logprobs=2
    ).choices[0]
    lp, n = scored.logprobs, plain.usage.prompt_tokens
    assert scored.text == echoed.choices[0].text and len(lp.tokens) == n + plain.usage.completion_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None and lp.text_offset[0] == 0
    assert all(v <= 0 for v in lp.token_logprobs[1:]) and lp.text_offset[n] == len(prompt)
    assert all(
        len(top) <= 3 and top[t] == v
        for t, v, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True)
    )
    streamed = client.completions.create(
        model="tiny-gpt2", prompt=prompt, max_tokens=5, temperature=0, echo=True, logprobs=2, stream=True
    )
    chunks = [c.choices[0] for c in streamed if c.choices]
    assert "".join(c.text for c in chunks) == scored.text
    assert [t for c in chunks if c.logprobs for t in c.logprobs.text_offset] == lp.text_offset
    ids = client.completions.create(model="tiny-gpt2", prompt=[5, 6, 7], max_tokens=2, temperature=0, echo=True)
    assert ids.usage.prompt_tokens == 3 and len(ids.choices[0].text) >= 3


def test_embeddings_naming_a_generation_model_is_a_400(gpt2) -> None:
    _, client = gpt2
    assert "tiny-gpt2" in [m.id for m in client.models.list()]
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="tiny-gpt2", input="x")
    error = refused.value.body
    assert error["param"] == "model" and "does not serve embeddings" in error["message"]
    assert "/v1/completions" in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_vllm_extensions_and_version(gpt2) -> None:
    server, client = gpt2
    forced = {"logit_bias": {EOS: 100}, "temperature": 0}
    held = client.completions.create(
        model="tiny-gpt2", prompt="a", max_tokens=8, **forced, extra_body={"min_tokens": 3}
    )
    assert held.usage.completion_tokens == 3 and held.choices[0].finish_reason == "stop"
    ended = client.completions.create(model="tiny-gpt2", prompt="a", max_tokens=8, **forced)
    assert ended.usage.completion_tokens == 0
    kept = client.completions.create(
        model="tiny-gpt2",
        prompt="a",
        max_tokens=3,
        **forced,
        extra_body={"ignore_eos": True, "skip_special_tokens": False},
    )
    assert kept.choices[0].text == "<|endoftext|>" * 3 and kept.usage.completion_tokens == 3
    cut = client.completions.create(
        model="tiny-gpt2", prompt=UNICODE[0], max_tokens=2, extra_body={"truncate_prompt_tokens": 4}
    )
    assert cut.usage.prompt_tokens == 4
    scored = client.completions.create(
        model="tiny-gpt2", prompt="the quick brown fox", max_tokens=2, extra_body={"prompt_logprobs": 1}
    )
    prompt_lp = scored.choices[0].model_extra["prompt_logprobs"]
    assert prompt_lp[0] is None and len(prompt_lp) == scored.usage.prompt_tokens
    assert all(1 <= len(position) <= 2 for position in prompt_lp[1:])
    assert all(v["logprob"] <= 0 and v["rank"] >= 1 and "decoded_token" in v for p in prompt_lp[1:] for v in p.values())
    chat = client.chat.completions.create(
        model="tiny-gpt2", messages=[{"role": "user", "content": "hi"}], max_tokens=2, extra_body={"prompt_logprobs": 0}
    )
    assert (
        chat.model_extra["prompt_logprobs"][0] is None
        and len(chat.model_extra["prompt_logprobs"]) == chat.usage.prompt_tokens
    )
    for extra, param in (
        ({"use_beam_search": True}, "use_beam_search"),
        ({"min_tokens": 9}, "min_tokens"),
        ({"prompt_logprobs": 1, "stream": True}, "prompt_logprobs"),
        ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ):
        answer = httpx.post(
            server.url + "/v1/completions",
            json={"model": "tiny-gpt2", "prompt": "a", "max_tokens": 8, **extra},
            headers=KEY,
        )
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
    # OpenAI's own fields that servectl does not use are still accepted
    assert client.chat.completions.create(
        model="tiny-gpt2", messages=[{"role": "user", "content": "hi"}], max_tokens=1, store=False, metadata={"a": "b"}
    ).choices
    from servectl import __version__

    assert httpx.get(server.url + "/version", headers=KEY).json() == {"version": __version__}
    document = httpx.get(server.url + "/openapi.json", headers=KEY).json()
    schemas = document["components"]["schemas"]
    request = next(s for name, s in schemas.items() if name.startswith("CompletionRequest"))
    for field in (
        "min_tokens",
        "ignore_eos",
        "skip_special_tokens",
        "truncate_prompt_tokens",
        "prompt_logprobs",
        "top_k",
    ):
        assert request["properties"][field]["description"].startswith("Extension (vLLM)"), field
    assert "/version" in document["paths"]


def test_extensions_and_echo_in_a_batch_give_what_they_give_alone(gpt2) -> None:
    _, client = gpt2
    requests: list[dict[str, Any]] = [
        {"prompt": UNICODE[0], "max_tokens": 12, "echo": True, "logprobs": 1, "temperature": 0.8, "seed": 4},
        {"prompt": "a", "max_tokens": 9, "temperature": 0, "logit_bias": {EOS: 100}, "extra_body": {"min_tokens": 5}},
        {"prompt": UNICODE[1], "max_tokens": 7, "temperature": 1, "seed": 8, "extra_body": {"ignore_eos": True}},
        {"prompt": "hello there", "max_tokens": 20, "temperature": 0, "extra_body": {"truncate_prompt_tokens": 2}},
        {"prompt": UNICODE[2], "max_tokens": 15, "temperature": 0.7, "seed": 1, "n": 2},
    ]
    alone = [client.completions.create(model="tiny-gpt2", **r).model_dump() for r in requests]

    async def together() -> list[dict[str, Any]]:
        aclient = openai.AsyncOpenAI(base_url=client.base_url, api_key="sk-test", max_retries=0)
        replies = await asyncio.gather(*(aclient.completions.create(model="tiny-gpt2", **r) for r in requests))
        return [reply.model_dump() for reply in replies]

    def same(answer: dict[str, Any]) -> Any:
        return [(c["text"], c["finish_reason"]) for c in answer["choices"]], answer["usage"]

    batched = asyncio.run(together())
    assert [same(a) for a in batched] == [same(a) for a in alone]
    for got, want in zip(
        batched[0]["choices"][0]["logprobs"]["token_logprobs"][1:],
        alone[0]["choices"][0]["logprobs"]["token_logprobs"][1:],
        strict=True,
    ):
        assert got == pytest.approx(want, abs=1e-4)
