"""The generation engines in process: the token engine over the tiny GPT-2 (continuous and
static), per-row sampling, incremental detokenization, and the piece engine of `complete`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from servectl.protocols.openai.lm import PieceEngine  # noqa: E402
from servectl.runners.engine import Detokenizer, TokenEngine  # noqa: E402
from servectl.runners.sequence import Sequence  # noqa: E402
from servectl.sdk import Sampling  # noqa: E402

PROMPTS = ["Once upon a time", "hello", "the quick brown fox jumps over", "a", "servectl serves models"]
LENGTHS = [40, 5, 20, 60, 12]


@pytest.fixture(scope="module")
def lm(models: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models / "tiny-gpt2")
    tok.pad_token = tok.pad_token or tok.eos_token
    return AutoModelForCausalLM.from_pretrained(models / "tiny-gpt2").eval(), tok


def seq(tok: Any, prompt: str, **sampling: Any) -> Sequence:
    ids = tok(prompt)["input_ids"]
    return Sequence(Sampling(**sampling), ids, len(ids))


def engine(lm: tuple[Any, Any], **options: Any) -> TokenEngine:
    return TokenEngine(lm[0], lm[1], 128, options.pop("max_rows", 16), options.pop("max_prefill", 2048), **options)


def run(e: TokenEngine, limit: int = 500) -> int:
    steps = 0
    while e.busy and steps < limit:
        e.step()
        steps += 1
    return steps


def hf_greedy(lm: tuple[Any, Any], prompt: str, n: int) -> list[int]:
    model, tok = lm
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    return new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new


def test_rows_that_join_and_leave_decode_as_alone(lm) -> None:
    """Rows of different lengths joining at different steps get the tokens of
    `model.generate` run on each alone (greedy); finished rows leave (a quarter of the batch
    at a time, or with the next join) and the batch only shrinks once nobody joins."""
    tok = lm[1]
    e = engine(lm)
    rows = [seq(tok, p, max_tokens=n) for p, n in zip(PROMPTS, LENGTHS, strict=True)]
    e.add([rows[0]])
    e.step()
    e.step()
    e.add(rows[1:3])
    e.step()
    assert len(e.running) == 3  # joined between steps, without waiting for the first row
    e.add(rows[3:])
    sizes = []
    while e.busy:
        e.step()
        sizes.append(len(e.running))
    assert sizes[-1] == 0 and max(sizes) == 5
    assert sizes == sorted(sizes, reverse=True)
    for row, prompt, n in zip(rows, PROMPTS, LENGTHS, strict=True):
        assert row.ids == hf_greedy(lm, prompt, n)
        assert row.text == tok.decode(row.ids, skip_special_tokens=True)  # incremental = whole decode
        assert row.finish_reason == ("length" if len(row.ids) == n else "stop")


def test_mixed_settings_in_one_batch_match_each_alone(lm) -> None:
    """Sampled rows with seeds, penalties, logit bias and top-k next to greedy rows: each
    row's tokens are those it gets alone."""
    tok = lm[1]
    settings = [
        {"max_tokens": 12},
        {"max_tokens": 9, "temperature": 0.8, "seed": 3, "top_k": 20},
        {"max_tokens": 15, "temperature": 1.0, "seed": 5, "top_p": 0.9},
        {"max_tokens": 10, "repetition_penalty": 1.3, "presence_penalty": 0.5, "frequency_penalty": 0.5},
        {"max_tokens": 8, "logit_bias": {5: 100.0}},
    ]
    alone = []
    for prompt, s in zip(PROMPTS, settings, strict=True):
        e = engine(lm)
        row = seq(tok, prompt, **s)
        e.add([row])
        run(e)
        alone.append(row.ids)
    e = engine(lm)
    together = [seq(tok, p, **s) for p, s in zip(PROMPTS, settings, strict=True)]
    e.add(together[:2])
    e.step()
    e.add(together[2:])
    run(e)
    assert [row.ids for row in together] == alone
    assert alone[4] == [5] * 8  # the bias forces token 5
    assert len(set(alone[3])) > 2  # the penalties push away from repeats


def test_stop_strings_budget_context_and_logprobs(lm) -> None:
    tok = lm[1]
    full = seq(tok, PROMPTS[0], max_tokens=30)
    e = engine(lm)
    e.add([full])
    run(e)
    stop = full.text[10:13]
    cut = seq(tok, PROMPTS[0], max_tokens=30, stop=[stop], logprobs=2)
    near_end = seq(tok, PROMPTS[2], max_tokens=500)  # more than the context holds
    e.add([cut, near_end])
    run(e)
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]
    assert len(cut.logprobs) == len(cut.ids) and all(len(lp.top) == 2 for lp in cut.logprobs)
    assert all(lp.logprob <= 0 and lp.top[0].logprob >= lp.top[1].logprob for lp in cut.logprobs)
    assert near_end.finish_reason == "length" and len(near_end.prompt) + len(near_end.ids) == 128


UNICODE = ["naïve café — 日本語", "ü", "Grüße aus Köln: “ok” ✓"]


def test_logprob_bytes_rebuild_the_text_and_the_end_token_is_not_there(lm) -> None:
    """A byte-level BPE token may hold part of a character: its `bytes` are its own, so the
    tokens' bytes make the text (a character cut by the budget shows as U+FFFD, as a whole
    decode shows it); the end-of-text token that ends a row has no entry."""
    tok = lm[1]
    e = engine(lm)
    rows = [seq(tok, p, max_tokens=24, temperature=1.0, seed=s, logprobs=1) for s in range(6) for p in UNICODE]
    e.add(rows)
    run(e)
    partial = 0
    for row in rows:
        assert len(row.logprobs) == len(row.ids) and tok.eos_token_id not in [lp.id for lp in row.logprobs]
        assert b"".join(lp.bytes for lp in row.logprobs).decode("utf-8", "replace") == row.text
        assert row.text == tok.decode(row.ids, skip_special_tokens=True)
        partial += sum(lp.token == "\ufffd" for lp in row.logprobs)
    assert partial > 10, "the prompts make tokens that hold part of a character"
    assert any(row.finish_reason == "stop" for row in rows)


def test_min_tokens_ignore_eos_special_tokens_and_prompt_logprobs(lm) -> None:
    """vLLM's extensions in the engine, each row as it is alone: `min_tokens` holds the end
    token back, `ignore_eos` generates past it (in the text only with skip_special_tokens
    false); `prompt_logprobs` are the model's own over the prompt."""
    model, tok = lm
    eos = tok.eos_token_id
    forced = {"logit_bias": {eos: 100.0}, "temperature": 0.5, "seed": 1}
    settings = [
        {"max_tokens": 9, **forced},
        {"max_tokens": 9, "min_tokens": 4, **forced},
        {"max_tokens": 5, "ignore_eos": True, "logprobs": 0, **forced},
        {"max_tokens": 3, "ignore_eos": True, "skip_special_tokens": False, "logprobs": 0, **forced},
        {"max_tokens": 6, "prompt_logprobs": 2},
    ]

    def make() -> list[Sequence]:
        return [seq(tok, p, **s) for p, s in zip(UNICODE + PROMPTS, settings, strict=False)]

    alone = []
    for row in make():
        e = engine(lm)
        e.add([row])
        run(e)
        alone.append(row)
    together = make()
    e = engine(lm)
    e.add(together[:2])
    e.step()
    e.add(together[2:])
    run(e)
    assert [r.ids for r in together] == [r.ids for r in alone] and [r.text for r in together] == [r.text for r in alone]
    ended, held, ignored, shown, scored = together
    assert ended.ids == [] and ended.finish_reason == "stop"
    assert len(held.ids) == 4 and held.finish_reason == "stop"
    assert ignored.ids == [eos] * 5 and ignored.text == "" and [lp.bytes for lp in ignored.logprobs] == [b""] * 5
    assert shown.text == "<|endoftext|>" * 3 and b"".join(lp.bytes for lp in shown.logprobs) == shown.text.encode()
    assert scored.prompt_logprobs is not None and scored.prompt_logprobs[0].logprob is None
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([scored.prompt])).logits[0].float(), -1)
    for at, entry in enumerate(scored.prompt_logprobs[1:]):
        assert entry.id == scored.prompt[at + 1] and len(entry.top) == 2
        assert entry.logprob == pytest.approx(float(logp[at, entry.id]), abs=1e-4)
        assert entry.rank == int((logp[at] > logp[at, entry.id]).sum()) + 1
    for a, b in zip(together[4].prompt_logprobs[1:], alone[4].prompt_logprobs[1:], strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_cancelled_rows_leave_and_the_rest_go_on(lm) -> None:
    tok = lm[1]
    e = engine(lm)
    rows = [seq(tok, p, max_tokens=30) for p in PROMPTS[:3]]
    e.add(rows)
    for _ in range(5):
        e.step()
    e.remove([rows[1]])
    assert rows[1].finish_reason == "cancelled" and rows[1] not in e.running and len(e.running) == 2
    run(e)
    assert rows[0].ids == hf_greedy(lm, PROMPTS[0], 30) and rows[2].ids == hf_greedy(lm, PROMPTS[2], 30)


def test_max_rows_and_prefill_budget_hold_joiners_back(lm) -> None:
    tok = lm[1]
    e = engine(lm, max_rows=2, max_prefill=8)
    rows = [seq(tok, "one two three four five", max_tokens=4) for _ in range(3)]
    e.add(rows)
    e.step()
    assert len(e.running) == 1  # two 5-token prompts would need a 10-token prefill
    e.step()
    assert len(e.running) == 2  # then at most max_rows run
    run(e)
    assert all(row.finish_reason for row in rows) and rows[0].ids == rows[2].ids


def test_static_engine_runs_a_batch_to_its_longest_row(lm) -> None:
    tok = lm[1]
    e = engine(lm, static=True)
    first = [seq(tok, PROMPTS[0], max_tokens=3), seq(tok, PROMPTS[1], max_tokens=20)]
    e.add(first)
    e.step()
    late = seq(tok, PROMPTS[2], max_tokens=3)
    e.add([late])
    while not first[1].done:
        e.step()
        assert late not in e.running  # nobody joins a running static batch
        assert len(e.running) == 2 or first[1].done  # finished rows stay in it until the longest ends
    run(e)
    assert late.ids == hf_greedy(lm, PROMPTS[2], 3)


@pytest.mark.parametrize("fast", [True, False], ids=["decode-stream", "offsets"])
def test_detokenizer_is_incremental_and_exact(lm, fast: bool) -> None:
    _, tok = lm
    text = "naïve café — “quoted” 日本語 emoji 🎉 end"
    ids = tok(text)["input_ids"]
    prompt = tok("A prompt:")["input_ids"]
    d = Detokenizer(tok, prompt)
    if not fast:
        d.stream, d.tokenizer = None, tok  # the offsets path, as for a slow tokenizer
    pieces = [d.push(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in piece for piece in pieces)
    assert len(d.tokens) < 70  # the window stays short


def test_piece_engine_joins_and_leaves_between_steps() -> None:
    closed: list[str] = []

    def complete(prompt: str, sampling: Sampling) -> Any:
        try:
            for word in prompt.split():
                yield word + " "
        finally:
            closed.append(prompt)

    def boom(prompt: str, sampling: Sampling) -> Any:
        yield "x"
        raise RuntimeError("broken")

    e = PieceEngine(complete, max_rows=2)
    long = Sequence(Sampling(max_tokens=100), [], 0, prompt_text="a b c d e f g h")
    short = Sequence(Sampling(max_tokens=100), [], 0, prompt_text="x y")
    third = Sequence(Sampling(max_tokens=2), [], 0, prompt_text="p q r s")
    e.add([long])
    e.step()
    e.add([short, third])
    e.step()
    assert [s.prompt_text for s in e.running] == ["a b c d e f g h", "x y"]  # max_rows: the third waits
    for _ in range(3):
        e.step()
    assert short.text == "x y " and short.finish_reason == "stop" and "x y" in closed
    assert third in e.running  # it took the free row
    while e.busy:
        e.step()
    assert long.text == "a b c d e f g h " and third.text == "p q " and third.finish_reason == "length"
    assert "p q r s" in closed  # a generator cut by max_tokens is closed at once
    bad = PieceEngine(boom, max_rows=2)
    broken, fine = Sequence(Sampling(max_tokens=5), [], 0, prompt_text=""), Sequence(Sampling(max_tokens=5), [], 0)
    bad.add([broken])
    while bad.busy:
        bad.step()
    assert broken.finish_reason == "error" and isinstance(broken.error, RuntimeError) and fine.error is None
