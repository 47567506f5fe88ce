"""What a grammar costs per token on CPU: llguidance, xgrammar and outlines-core side by side,
over the tiny GPT-2's vocabulary (byte-level BPE, 300 tokens, built here: no download).

    python benchmarks/grammar_cost.py [--walks 20] [--tokens 64]

For each engine and grammar (any JSON object, a typed object, a tool call, a regex, a
choice): the compile time (vocabulary already prepared), and per generated token the time to
compute the next-token mask, to apply it to a row's logits (-inf where forbidden) and to
advance past the chosen token. Tokens are drawn at random
among those the mask allows (seeded), so each engine walks its own valid outputs. Then the
schema features each engine compiles (coverage). An engine that is not installed is skipped.

The serving engine (servectl.runners.grammar) uses llguidance; this script is why.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "role": {"enum": ["admin", "user", "guest"]},
    },
    "required": ["name", "age", "tags", "role"],
    "additionalProperties": False,
}
TOOL_CALL = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 16}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
GRAMMARS: dict[str, tuple[str, Any]] = {
    "json_object": ("json", {"type": "object"}),
    "person": ("json", PERSON),
    "tool_call": ("json", TOOL_CALL),
    "regex": ("regex", r"\d{3}-[a-z]{2,6}( [a-z]{2,6}){0,3}"),
    "choice": ("regex", "(positive|negative|neutral)"),
}
COVERAGE: dict[str, Any] = {
    "anyOf": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    "oneOf": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]},
    "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
    "$ref/$defs": {"$defs": {"p": {"type": "integer"}}, "type": "object", "properties": {"x": {"$ref": "#/$defs/p"}}},
    "recursive $ref": {
        "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}},
        "$ref": "#/$defs/node",
    },
    "type list (nullable)": {"type": ["string", "null"]},
    "pattern": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"},
    "format date-time": {"type": "string", "format": "date-time"},
    "format email": {"type": "string", "format": "email"},
    "format uuid": {"type": "string", "format": "uuid"},
    "min/maxLength": {"type": "string", "minLength": 2, "maxLength": 5},
    "min/maxItems": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    "minimum/maximum": {"type": "integer", "minimum": 3, "maximum": 7},
    "exclusiveMinimum (number)": {"type": "number", "exclusiveMinimum": 0},
    "prefixItems": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
    "additionalProperties schema": {"type": "object", "additionalProperties": {"type": "integer"}},
    "patternProperties": {"type": "object", "patternProperties": {"^x-": {"type": "string"}}},
    "const": {"const": "yes"},
    "enum of mixed": {"enum": [1, "two", None, True]},
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "not": {"not": {"type": "string"}},
}


@dataclass
class Result:
    compile_ms: float
    mask_us: list[float] = field(default_factory=list)
    advance_us: list[float] = field(default_factory=list)
    apply_us: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    finished: int = 0


class Engine:
    """One grammar library behind the same three calls: compile, mask, advance."""

    name = ""
    vocab = 0

    def compile(self, kind: str, source: Any) -> Any:
        raise NotImplementedError

    def start(self, compiled: Any) -> Any:
        """A fresh matcher over a compiled grammar."""
        raise NotImplementedError

    def fill(self, state: Any) -> Any:
        """The next-token mask in the engine's own form (what is timed)."""
        raise NotImplementedError

    def allowed(self, mask: Any) -> list[int]:
        """The mask as token ids (not timed: the serving engine applies the bitmask itself)."""
        raise NotImplementedError

    def apply(self, mask: Any, logits: Any) -> None:
        """-inf on the row's logits where the mask forbids (timed apart: 'apply us')."""
        raise NotImplementedError

    def advance(self, state: Any, token: int) -> bool:
        """Commit `token`; True when the grammar is finished."""
        raise NotImplementedError


class PackedMask(Engine):
    """An engine whose mask is a bitmask of 32-bit words (llguidance's and xgrammar's)."""

    bits: Any = None

    def allowed(self, mask: Any) -> list[int]:
        bits = ((mask[:, None] >> self.bits) & 1).flatten()[: self.vocab].bool()
        return bits.nonzero().flatten().tolist()  # type: ignore[no-any-return]

    def apply(self, mask: Any, logits: Any) -> None:
        bits = ((mask[:, None] >> self.bits) & 1).flatten()[: self.vocab]
        logits.masked_fill_(bits == 0, float("-inf"))


class Llguidance(PackedMask):
    name = "llguidance"

    def __init__(self, hf: Any) -> None:
        import llguidance
        import llguidance.hf
        import torch

        self.llg, self.torch = llguidance, torch
        self.tok = llguidance.hf.from_tokenizer(hf, n_vocab=len(hf))
        self.vocab = len(hf)
        self.words = (self.vocab + 31) // 32
        self.bits = torch.arange(32, dtype=torch.int32)

    def compile(self, kind: str, source: Any) -> Any:
        m = self.llg.LLMatcher
        grammar = m.grammar_from_json_schema(source) if kind == "json" else m.grammar_from_regex(source)
        error = m.validate_grammar(grammar, self.tok)
        if error:
            raise ValueError(error)
        return grammar

    def start(self, compiled: Any) -> Any:
        matcher = self.llg.LLMatcher(self.tok, compiled, log_level=0)
        return (matcher, self.torch.zeros(self.words, dtype=self.torch.int32))

    def fill(self, state: Any) -> Any:
        matcher, buf = state
        matcher.unsafe_compute_mask_ptr(buf.data_ptr(), buf.numel() * 4)
        return buf

    def advance(self, state: Any, token: int) -> bool:
        matcher, _ = state
        matcher.consume_token(token)
        return bool(matcher.is_stopped())


class Xgrammar(PackedMask):
    name = "xgrammar"

    def __init__(self, hf: Any) -> None:
        import torch
        import xgrammar

        self.xgr, self.torch = xgrammar, torch
        info = xgrammar.TokenizerInfo.from_huggingface(hf, vocab_size=len(hf))
        self.compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self.vocab = len(hf)
        self.bits = torch.arange(32, dtype=torch.int32)

    def compile(self, kind: str, source: Any) -> Any:
        c = self.compiler
        return c.compile_json_schema(json.dumps(source)) if kind == "json" else c.compile_regex(source)

    def start(self, compiled: Any) -> Any:
        return (self.xgr.GrammarMatcher(compiled), self.xgr.allocate_token_bitmask(1, self.vocab))

    def fill(self, state: Any) -> Any:
        matcher, buf = state
        matcher.fill_next_token_bitmask(buf)
        return buf[0]

    def advance(self, state: Any, token: int) -> bool:
        matcher, _ = state
        matcher.accept_token(token)
        return bool(matcher.is_terminated())


class OutlinesCore(Engine):
    name = "outlines-core"

    def __init__(self, hf: Any) -> None:
        import outlines_core
        import torch

        self.oc, self.torch = outlines_core, torch
        eos = hf.eos_token_id
        tokens: dict[bytes, list[int]] = {}
        for i in range(len(hf)):
            if i != eos and i not in hf.all_special_ids:
                tokens.setdefault(hf.convert_tokens_to_string([hf.convert_ids_to_tokens(i)]).encode(), []).append(i)
        self.vocabulary = outlines_core.Vocabulary(eos, tokens)
        self.vocab = len(hf)

    def compile(self, kind: str, source: Any) -> Any:
        from outlines_core.json_schema import build_regex_from_schema

        regex = build_regex_from_schema(json.dumps(source)) if kind == "json" else source
        return self.oc.Index(regex, self.vocabulary)

    def start(self, compiled: Any) -> Any:
        return self.oc.Guide(compiled)

    def fill(self, state: Any) -> Any:
        return state.get_tokens()

    def allowed(self, mask: Any) -> list[int]:
        return list(mask)

    def apply(self, mask: Any, logits: Any) -> None:
        keep = self.torch.full_like(logits, float("-inf"))
        ids = self.torch.tensor(mask, dtype=self.torch.long)
        keep[ids] = 0
        logits += keep

    def advance(self, state: Any, token: int) -> bool:
        state.advance(token)
        return bool(state.is_finished())


def walk(engine: Engine, kind: str, source: Any, walks: int, tokens: int) -> Result:
    t0 = time.perf_counter()
    compiled = engine.compile(kind, source)
    result = Result((time.perf_counter() - t0) * 1000)
    import torch

    logits0 = torch.randn(engine.vocab)
    for w in range(walks):
        rng = random.Random(w)
        state = engine.start(compiled)
        for _ in range(tokens):
            t0 = time.perf_counter()
            mask = engine.fill(state)
            t1 = time.perf_counter()
            allowed = engine.allowed(mask)
            logits = logits0.clone()
            t3 = time.perf_counter()
            engine.apply(mask, logits)
            result.apply_us.append((time.perf_counter() - t3) * 1e6)
            if not allowed:
                break
            token = rng.choice(allowed)
            t2 = time.perf_counter()
            done = engine.advance(state, token)
            result.mask_us.append((t1 - t0) * 1e6)
            result.tokens.append(token)
            result.advance_us.append((time.perf_counter() - t2) * 1e6)
            if done:
                result.finished += 1
                break
    return result


def coverage(engine: Engine) -> list[str]:
    ok = []
    for name, schema in COVERAGE.items():
        try:
            engine.compile("json", schema)
        except Exception:
            continue
        ok.append(name)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--walks", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from transformers import AutoTokenizer

    from servectl.examples.build import build_gpt2

    with tempfile.TemporaryDirectory() as tmp:
        build_gpt2(Path(tmp))
        hf = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    factories: list[Callable[[Any], Engine]] = [Llguidance, Xgrammar, OutlinesCore]
    print(f"vocabulary: {len(hf)} tokens; {args.walks} walks of up to {args.tokens} tokens per grammar")
    columns = f"{'compile ms':>11}{'mask us p50':>13}{'mask us p99':>13}{'advance us':>12}{'apply us':>10}"
    print(f"{'engine':<14}{'grammar':<13}{columns}")
    for factory in factories:
        try:
            t0 = time.perf_counter()
            engine = factory(hf)
            setup = (time.perf_counter() - t0) * 1000
        except ImportError as exc:
            print(f"{factory.__name__}: not installed ({exc})")
            continue
        for name, (kind, source) in GRAMMARS.items():
            try:
                r = walk(engine, kind, source, args.walks, args.tokens)
            except Exception as exc:
                print(f"{engine.name:<14}{name:<13} does not compile: {str(exc)[:60]}")
                continue
            q = statistics.quantiles(r.mask_us, n=100)
            print(
                f"{engine.name:<14}{name:<13}{r.compile_ms:>11.2f}{statistics.median(r.mask_us):>13.1f}"
                f"{q[98]:>13.1f}{statistics.median(r.advance_us):>12.1f}{statistics.median(r.apply_us):>10.1f}"
            )
        covered = coverage(engine)
        missing = [n for n in COVERAGE if n not in covered]
        print(f"{engine.name:<14}setup {setup:.0f} ms; compiles {len(covered)}/{len(COVERAGE)} schema features")
        print(f"{'':<14}missing: {', '.join(missing) or 'none'}")


if __name__ == "__main__":
    main()
