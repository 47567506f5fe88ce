"""One request at a time through transformers' own `model.generate` (a `TextIteratorStreamer`
in a thread), behind servectl's OpenAI routes: the baseline of `benchmarks/continuous.py`,
served with `batching.max_batch_size: 1`."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from servectl.runners.engine import Detokenizer
from servectl.sdk import Sampling

_lm: dict[str, Any] = {}


def setup(device: str, spec: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(spec.model_path())
    _lm["tokenizer"] = AutoTokenizer.from_pretrained(path, local_files_only=True)
    _lm["model"] = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()


def count_tokens(text: str) -> int:
    return len(_lm["tokenizer"](text)["input_ids"])


class _Tokens:
    """A `model.generate` streamer that hands over each new token id (the first `put` is the
    prompt), so every piece is one token and usage counts real tokens."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.queue.put(int(token))

    def end(self) -> None:
        self.queue.put(None)


def complete(prompt: str, sampling: Sampling) -> Iterator[str]:
    tokenizer, model = _lm["tokenizer"], _lm["model"]
    inputs = tokenizer(prompt, return_tensors="pt")
    streamer = _Tokens()
    options = {"max_new_tokens": sampling.max_tokens, "do_sample": False, "pad_token_id": tokenizer.eos_token_id}
    thread = threading.Thread(target=model.generate, kwargs={**inputs, **options, "streamer": streamer})
    thread.start()
    text = Detokenizer(tokenizer, inputs["input_ids"][0].tolist())
    while (token := streamer.queue.get()) is not None:
        if token != tokenizer.eos_token_id:
            yield text.push(token)
    thread.join()
