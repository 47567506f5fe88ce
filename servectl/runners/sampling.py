"""Choosing each row's next token from a step's logits, each row with its own settings.

Rows that are plain greedy share one batched argmax; the others go through their own
processors, in the order vLLM and transformers apply them: logit bias, repetition
penalty (prompt and output), presence/frequency penalties (output), temperature, top-k,
top-p, then a draw from the row's own seeded generator. A row short of its `min_tokens`
cannot end (its end-of-text tokens are masked). Log-probabilities are those of the model's
raw distribution (before any processor), as OpenAI reports them; the end-of-text token that
ends a row is not part of its answer, so it gets none.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from servectl.runners.sequence import Candidate, Sequence, TokenLogprob
from servectl.runners.vocab import Vocabulary


def _plain_greedy(row: Sequence, banned: frozenset[int]) -> bool:
    s = row.sampling
    return (
        s.temperature <= 0
        and s.repetition_penalty == 1.0
        and not s.presence_penalty
        and not s.frequency_penalty
        and not s.logit_bias
        and not banned
    )


def choose(logits: Any, rows: list[Sequence], vocab: Vocabulary) -> list[int]:
    """The next token of every row (`logits`: [rows, vocab] floats of the last position);
    rows that asked for log-probabilities get them recorded."""
    import torch

    greedy = logits.argmax(-1).tolist()
    chosen = []
    for i, row in enumerate(rows):
        s = row.sampling
        banned = vocab.eos if vocab.eos and len(row.ids) < s.min_tokens else frozenset()
        token = greedy[i] if _plain_greedy(row, banned) else _sample(logits[i], row, banned, torch)
        ends = token in vocab.eos and not s.ignore_eos
        if s.logprobs is not None and not row.done and not ends:
            shown = vocab.shown(token, s.skip_special_tokens)
            row.logprobs.append(logprob_of(logits[i], token, s.logprobs, vocab, shown, torch))
        chosen.append(token)
    return chosen


def _sample(logits: Any, row: Sequence, banned: frozenset[int], torch: Any) -> int:
    s = row.sampling
    logits = logits.clone()
    if banned:
        logits[torch.tensor(sorted(banned), device=logits.device)] = float("-inf")
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


def logprob_of(logits: Any, token: int, k: int, vocab: Vocabulary, shown: bytes, torch: Any) -> TokenLogprob:
    """`token`'s log-probability and rank under `logits` ([vocab]), the k likeliest beside;
    `shown`: the bytes the token adds to its text."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    top: list[Candidate] = []
    if k:
        values, ids = logp.topk(min(k, logp.shape[-1]))
        pairs = zip(values.tolist(), ids.tolist(), strict=True)
        top = [Candidate(i, vocab.text(i), v, vocab.bytes_of(i)) for v, i in pairs]
    value = logp[token]
    rank = int((logp > value).sum()) + 1
    return TokenLogprob(token, vocab.text(token), float(value), shown, rank, top)


def prompt_logprobs(logits: Any, prompt: list[int], k: int, vocab: Vocabulary) -> list[TokenLogprob]:
    """Each prompt token's log-probability given those before it (`logits`: [len(prompt),
    vocab], the prefill's every position); the first token has none (logprob None)."""
    import torch

    first = prompt[0]
    out = [TokenLogprob(first, vocab.text(first), None, vocab.bytes_of(first), 0, [])]
    for at, token in enumerate(prompt[1:]):
        out.append(logprob_of(logits[at], token, k, vocab, vocab.bytes_of(token), torch))
    return out
