"""Choosing each row's next token from a step's logits, each row with its own settings.

Rows that are plain greedy share one batched argmax; the others go through their own
processors, in the order vLLM and transformers apply them: logit bias, repetition
penalty (prompt and output), presence/frequency penalties (output), temperature, top-k,
top-p, then a draw from the row's own seeded generator. Log-probabilities are those of the
model's raw distribution (before any processor), as OpenAI reports them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from servectl.runners.sequence import Sequence, TokenLogprob


def _plain_greedy(row: Sequence) -> bool:
    s = row.sampling
    return (
        s.temperature <= 0
        and s.repetition_penalty == 1.0
        and not s.presence_penalty
        and not s.frequency_penalty
        and not s.logit_bias
    )


def choose(logits: Any, rows: list[Sequence], token_text: Any) -> list[int]:
    """The next token of every row (`logits`: [rows, vocab] floats of the last position);
    rows that asked for log-probabilities get them recorded (`token_text(id) -> str`)."""
    import torch

    greedy = logits.argmax(-1).tolist()
    chosen = []
    for i, row in enumerate(rows):
        token = greedy[i] if _plain_greedy(row) else _sample(logits[i], row, torch)
        if row.sampling.logprobs is not None:
            row.logprobs.append(_logprob(logits[i], token, row.sampling.logprobs, token_text, torch))
        chosen.append(token)
    return chosen


def _sample(logits: Any, row: Sequence, torch: Any) -> int:
    s = row.sampling
    logits = logits.clone()
    if s.logit_bias:
        ids = torch.tensor(list(s.logit_bias), device=logits.device)
        ok = ids < logits.shape[-1]
        logits[ids[ok]] += torch.tensor(list(s.logit_bias.values()), device=logits.device, dtype=logits.dtype)[ok]
    if s.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(row.prompt) | set(row.ids)), device=logits.device, dtype=torch.long)
        if len(seen):
            picked = logits[seen]
            logits[seen] = torch.where(picked > 0, picked / s.repetition_penalty, picked * s.repetition_penalty)
    if (s.presence_penalty or s.frequency_penalty) and row.ids:
        counts = Counter(row.ids)
        ids = torch.tensor(list(counts), device=logits.device)
        n = torch.tensor(list(counts.values()), device=logits.device, dtype=logits.dtype)
        logits[ids] -= s.frequency_penalty * n + s.presence_penalty
    if s.temperature <= 0:
        return int(logits.argmax())
    logits = logits / s.temperature
    if s.top_k > 0 and s.top_k < logits.shape[-1]:
        kth = logits.topk(s.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if s.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < s.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=row.generator))


def _logprob(logits: Any, token: int, k: int, token_text: Any, torch: Any) -> TokenLogprob:
    logp = torch.log_softmax(logits.float(), dim=-1)
    top: list[tuple[str, float]] = []
    if k:
        values, ids = logp.topk(min(k, logp.shape[-1]))
        top = [(token_text(int(i)), float(v)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)]
    return TokenLogprob(token_text(token), float(logp[token]), top)
