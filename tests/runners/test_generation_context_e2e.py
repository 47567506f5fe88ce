"""The predict route of a text-generation model refuses a `max_new_tokens` the context cannot
hold (400 naming it, as the OpenAI route's `context_length_exceeded`), and keeps a long
prompt's last tokens to leave room for what was asked. In process, over the tiny GPT-2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from servectl.handler import Handler
from servectl.outcome import Failure
from servectl.runners import build_handler
from servectl.spec import Spec
from servectl.worker.batch import BatchRunner
from servectl.worker.generation import GenerationLoop
from servectl.worker.messages import Request


@pytest.fixture(scope="module")
def gpt2(models: Path) -> Handler:
    model = {"backend": "transformers", "task": "text-generation", "path": str(models / "tiny-gpt2")}
    spec = Spec.model_validate({"name": "g", "model": model, "devices": {"accelerator": "cpu"}})
    handler = build_handler(spec)
    handler.setup("cpu", spec)
    return handler


def admit(handler: Handler, body: dict[str, Any]) -> list[Any]:
    """What the worker answers at once (a refusal), or [] when the generation started."""
    loop = GenerationLoop(outbox=None)  # type: ignore[arg-type]  # a refusal sends nothing
    results = loop.route(handler, BatchRunner(handler, 8))(0, [Request(0, "r", orjson.dumps(body), "predict")])
    for job in loop.jobs.values():
        job.job.close()
    return results


def test_max_new_tokens_beyond_the_context_is_refused(gpt2: Handler) -> None:
    assert gpt2.runner.context == 128
    [result] = admit(gpt2, {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 500}})
    failure = result.outcome
    assert isinstance(failure, Failure) and (failure.status, failure.kind) == (400, "context_length_exceeded")
    assert failure.detail[0]["loc"] == ["parameters", "max_new_tokens"]
    assert "max_new_tokens is 500" in failure.message and "at most 127" in failure.message
    [result] = admit(gpt2, {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 128}})
    assert result.outcome.status == 400


def test_what_fits_is_generated_and_a_long_prompt_makes_room(gpt2: Handler) -> None:
    assert admit(gpt2, {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 100}}) == []
    assert admit(gpt2, {"inputs": "Once upon a time"}) == []  # the default: the room left
    runner = gpt2.runner
    long = "the quick brown fox jumps over the lazy dog " * 40
    assert len(runner.tokenizer(long)["input_ids"]) > 128
    seq = runner._predict_sequence(long, {"max_new_tokens": 50})
    assert (seq.prompt_tokens, seq.sampling.max_tokens) == (78, 50)
    seq = runner._predict_sequence(long, {})
    assert seq.prompt_tokens == 127
