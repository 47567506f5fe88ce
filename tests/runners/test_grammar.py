"""Constrained decoding in the token engine over the tiny GPT-2: constrained rows always
match their grammar, share a continuous batch with free rows, and each row decodes as it
does alone (seeded); a batch of free rows never asks a grammar for anything."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

from servectl.runners import grammar as grammar_module  # noqa: E402
from servectl.runners.engine import TokenEngine  # noqa: E402
from servectl.runners.grammar import Grammars  # noqa: E402
from servectl.runners.sequence import Sequence  # noqa: E402
from servectl.sdk import Constraint, InvalidInput, Sampling  # noqa: E402

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user"]},
    },
    "required": ["name", "age", "role"],
}


@pytest.fixture(scope="module")
def lm(models: Path) -> tuple[Any, Any, Grammars]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models / "tiny-gpt2")
    model = AutoModelForCausalLM.from_pretrained(models / "tiny-gpt2").eval()
    return model, tok, Grammars(tok, model.config.vocab_size)


def row(lm: tuple[Any, Any, Grammars], prompt: str, constraint: Constraint | None = None, **sampling: Any) -> Sequence:
    ids = lm[1](prompt)["input_ids"]
    seq = Sequence(Sampling(**{"max_tokens": 60, **sampling}), ids, len(ids))
    if constraint is not None:
        seq.grammar = lm[2].row(constraint)
    return seq


def run(lm: tuple[Any, Any, Grammars], rows: list[Sequence], stagger: bool = False) -> None:
    e = TokenEngine(lm[0], lm[1], 128, 16, 2048)
    if stagger:  # one joins per step: every row joins a running batch
        for r in rows:
            e.add([r])
            e.step()
    else:
        e.add(rows)
    while e.busy:
        e.step()


CASES: list[tuple[Constraint | None, Any]] = [
    (Constraint("json", PERSON), lambda text: jsonschema.validate(json.loads(text), PERSON) is None),
    (Constraint("regex", r"[a-c]{2}-\d{2,3}"), lambda text: re.fullmatch(r"[a-c]{2}-\d{2,3}", text)),
    (Constraint("choice", ["good", "bad", "neutral"]), lambda text: text in ("good", "bad", "neutral")),
    (Constraint("grammar", 'root ::= "yes" | "no" " " [0-9]'), lambda text: re.fullmatch(r"yes|no \d", text)),
    (None, None),
]


def test_constrained_and_free_rows_share_a_batch_and_decode_as_alone(lm) -> None:
    """Greedy and seeded sampled rows, constrained or not, in one batch joining at different
    steps: every constrained row ends with finish_reason stop and text its grammar accepts,
    and every row's tokens equal those it gets alone."""

    def build() -> list[Sequence]:
        rows = []
        for i, (constraint, _) in enumerate(CASES):
            rows.append(row(lm, f"prompt {i}", constraint, temperature=0))
            rows.append(row(lm, f"sampled {i}", constraint, temperature=1.0, seed=10 + i))
        return rows

    together = build()
    run(lm, together, stagger=True)
    for r, (constraint, check) in zip(together, [c for c in CASES for _ in (0, 1)], strict=True):
        if constraint is None:
            continue
        assert r.finish_reason == "stop", (constraint, r.text)
        assert check(r.text), (constraint, r.text)
    for i, r in enumerate(build()):
        run(lm, [r])
        assert r.ids == together[i].ids and r.text == together[i].text


def test_json_object_parses_and_usage_counts_every_token(lm) -> None:
    r = row(lm, "{", Constraint("json", {"type": "object"}), temperature=1.0, seed=3, max_tokens=100)
    run(lm, [r])
    if r.finish_reason == "stop":
        assert isinstance(json.loads(r.text), dict)
    assert lm[1].decode(r.ids) == r.text  # every generated token is in the text (usage counts them)


def test_free_rows_pay_nothing(lm, monkeypatch) -> None:
    """A batch with no constrained row never reaches the mask code."""
    calls = []
    real = grammar_module.constrain

    def spy(logits: Any, rows: list[Sequence]) -> Any:
        out = real(logits, rows)
        calls.append(out is logits)
        return out

    import servectl.runners.engine as engine_module

    monkeypatch.setattr(engine_module, "constrain", spy)
    run(lm, [row(lm, "free", temperature=0, max_tokens=5), row(lm, "also", temperature=1.0, seed=1, max_tokens=5)])
    assert calls and all(calls), "no mask, no copy of the logits"


@pytest.mark.parametrize(
    ("constraint", "words"),
    [
        (Constraint("json", {"type": "strin"}, "response_format.json_schema.schema"), "Invalid type"),
        (Constraint("json", {"type": "array", "uniqueItems": True}, "guided_json"), "uniqueItems"),
        (Constraint("regex", "(ab", "guided_regex"), "regex"),
        (Constraint("grammar", "start: nothing_defined", "guided_grammar"), "unknown name"),
        (Constraint("choice", [], "guided_choice"), "non-empty"),
    ],
)
def test_a_constraint_that_does_not_compile_is_a_400_naming_its_param(lm, constraint, words) -> None:
    with pytest.raises(InvalidInput) as bad:
        lm[2].row(constraint)
    assert bad.value.status == 400 and bad.value.field == constraint.param
    assert words in str(bad.value)


def test_lenient_schemas_skip_what_cannot_be_enforced(lm) -> None:
    lenient = Constraint("json", {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, strict=False)
    assert lm[2].row(lenient) is not None
