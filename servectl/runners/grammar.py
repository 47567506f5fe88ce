"""Constrained decoding: a row with a grammar may only take the tokens that keep its output
inside it (structured outputs, forced tool calls), llguidance computing each step's mask.

llguidance was chosen by measurement (benchmarks/grammar_cost.py, the tiny GPT-2's vocabulary
on CPU): its mask takes 7-53 us per token at the median (xgrammar 8-13 us, outlines-core
under 1 us from a precomputed index), against the 20-70 us of applying any mask to a row's
logits; what decided is the rest: no compile step worth the name (under 6 ms; outlines-core
takes 10 s for "any JSON object"), a 40 ms vocabulary set-up (xgrammar 0.4 s and a 4 s
import), a clear error for schema keywords it cannot enforce (xgrammar accepts and ignores
them), Lark grammars with embedded JSON schemas (tool calls), and no torch or triton
dependency. Rows are masked one by one inside the continuous batch: free rows beside them
are untouched, and a step with no constrained row does no mask work at all.

JSON is compact (no free whitespace, so a model cannot pad forever), and an object schema
that lists `properties` without saying `additionalProperties` takes only those (as
xgrammar's strict mode and OpenAI's strict schemas do).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from servectl.runners.sequence import Sequence
from servectl.sdk import Constraint, InvalidInput

_COMPACT = {"whitespace_flexible": False}


@dataclass(slots=True)
class RowGrammar:
    """One row's matcher: where its output stands in its grammar."""

    matcher: Any

    def advance(self, seq: Sequence, token: int) -> None:
        """`token` was taken: the row ends (`stop`) once its grammar can take nothing more."""
        if seq.done:
            return
        self.matcher.consume_token(token)
        if self.matcher.is_error():
            seq.fail(RuntimeError(f"constrained decoding failed: {self.matcher.get_error()}"))
        elif self.matcher.is_stopped():
            seq.finish_reason = "stop"


class Grammars:
    """The grammar engine of one tokenizer: compiles a sequence's constraint into its own
    matcher. A constraint that does not compile is the client's 400 naming its `param`."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.hf = tokenizer
        self.vocab_size = vocab_size
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        """llguidance's view of the vocabulary, made on first use (about 1 s for 150k tokens)."""
        if self._tokenizer is None:
            import llguidance.hf

            self._tokenizer = llguidance.hf.from_tokenizer(self.hf, n_vocab=self.vocab_size)
        return self._tokenizer

    def row(self, constraint: Constraint) -> RowGrammar:
        try:
            import llguidance
        except ImportError as exc:
            raise InvalidInput(
                "constrained decoding needs llguidance on the server (pip install 'servectl[structured]')",
                constraint.param,
                status=400,
            ) from exc
        matcher = llguidance.LLMatcher(self.tokenizer, lark_of(constraint), log_level=0)
        if matcher.is_error():
            raise InvalidInput(
                f"{_subject(constraint)} does not compile: {_first_line(matcher.get_error())}",
                constraint.param,
                status=400,
            )
        return RowGrammar(matcher)


def check(constraint: Constraint) -> None:
    """The constraint compiles (no tokenizer needed), else the client's 400 naming its param;
    without llguidance installed nothing is checked here (a row's compile says so)."""
    try:
        import llguidance
    except ImportError:
        return
    error = llguidance.LLMatcher.validate_grammar(lark_of(constraint))
    if error and not error.startswith("WARNING"):
        raise InvalidInput(f"{_subject(constraint)} does not compile: {_first_line(error)}", constraint.param, 400)


def lark_of(constraint: Constraint) -> str:
    """The constraint as a Lark grammar (llguidance's dialect: `%json` embeds a schema)."""
    kind, value = constraint.kind, constraint.value
    if kind == "json":
        if not isinstance(value, dict):
            raise InvalidInput("a JSON schema must be an object", constraint.param, status=400)
        return "start: " + json_rule(value, constraint.strict)
    if kind == "regex":
        if not isinstance(value, str):
            raise InvalidInput("a regex must be a string", constraint.param, status=400)
        return "start: /" + value.replace("/", "\\/") + "/"
    if kind == "choice":
        if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
            raise InvalidInput("choices must be a non-empty list of strings", constraint.param, status=400)
        return "start: " + " | ".join(json.dumps(c) for c in value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("a grammar must be a non-empty string", constraint.param, status=400)
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        return str(any_to_lark(value))  # GBNF (llama.cpp, xgrammar) or Lark as it is
    except Exception as exc:
        raise InvalidInput(f"the grammar does not parse: {exc}", constraint.param, status=400) from exc


def json_rule(schema: dict[str, Any], strict: bool = True) -> str:
    """A Lark rule body matching compact JSON valid against `schema`."""
    closed = close_objects(copy.deepcopy(schema))
    closed["x-guidance"] = {**_COMPACT, "lenient": not strict}
    return "%json " + json.dumps(closed)


def close_objects(schema: Any) -> Any:
    """Object schemas that list properties and say nothing of others take no others."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema and "patternProperties" not in schema:
            schema["additionalProperties"] = False
        for key, value in schema.items():
            if key not in ("const", "enum", "default", "examples"):
                close_objects(value)
    elif isinstance(schema, list):
        for item in schema:
            close_objects(item)
    return schema


def constrain(logits: Any, rows: list[Sequence]) -> Any:
    """`logits` ([rows, vocab]) with each constrained row's forbidden tokens at -inf (a
    copy); the same tensor, untouched, when no row is constrained."""
    picked = [i for i, row in enumerate(rows) if row.grammar is not None and not row.done]
    if not picked:
        return logits
    import torch

    vocab = logits.shape[-1]
    words = (vocab + 31) // 32
    masks = torch.zeros((len(picked), words), dtype=torch.int32)
    for j, i in enumerate(picked):
        rows[i].grammar.matcher.unsafe_compute_mask_ptr(masks[j].data_ptr(), words * 4)
    bits = (masks.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    allowed = bits.reshape(len(picked), -1)[:, :vocab].bool().to(logits.device)
    out = logits.clone()
    index = torch.tensor(picked, device=logits.device)
    out[index] = out[index].masked_fill(~allowed, float("-inf"))
    return out


def _subject(constraint: Constraint) -> str:
    return {"json": "the JSON schema", "regex": "the regex", "choice": "the choice"}.get(constraint.kind, "the grammar")


def _first_line(error: str) -> str:
    """llguidance's error without its dump of the parser state."""
    return error.split("\n<state>")[0].strip()
