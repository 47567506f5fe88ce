"""Token-by-token generation for a batch of prompts, each with its own sampling settings.

One forward pass per step for the whole batch (left padding, KV cache); each row samples
with its own temperature / top_p / seed, stops on EOS, its stop strings or its token budget,
and the caller gets every step's new text per row, so streams can be sent as they grow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from servectl.sdk import Sampling

__all__ = ["RowState", "Sampling", "generate_steps"]


@dataclass
class RowState:
    """One sequence being generated."""

    sampling: Sampling
    prompt_tokens: int
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of `text` already handed out
    finish_reason: str | None = None
    generator: Any = None


def generate_steps(
    model: Any, tokenizer: Any, prompts: list[str], settings: list[Sampling], max_length: int
) -> Iterator[list[tuple[str, RowState]]]:
    """Yield, per step, (new text, state) for every row; a row is done once its finish_reason is set."""
    import torch

    device = next(model.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=max_length).to(device)
    mask = enc["attention_mask"]
    rows = [RowState(s, int(m.sum())) for s, m in zip(settings, mask, strict=True)]
    for row in rows:
        if row.sampling.seed is not None:
            row.generator = torch.Generator(device=device).manual_seed(row.sampling.seed)
    eos = tokenizer.eos_token_id
    input_ids = enc["input_ids"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    past = None
    budget = max(s.max_tokens for s in settings)
    with torch.inference_mode():
        for _ in range(budget):
            out = model(
                input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
            )
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_ids = []
            step: list[tuple[str, RowState]] = []
            for i, row in enumerate(rows):
                if row.finish_reason is not None:
                    next_ids.append(eos if eos is not None else 0)
                    step.append(("", row))
                    continue
                token = _sample(logits[i], row, torch)
                next_ids.append(token)
                step.append((_advance(row, token, tokenizer, eos), row))
            yield step
            if all(row.finish_reason is not None for row in rows):
                return
            input_ids = torch.tensor(next_ids, device=device).unsqueeze(-1)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
            positions = positions[:, -1:] + 1


def _sample(logits: Any, row: RowState, torch: Any) -> int:
    s = row.sampling
    if s.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < s.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=row.generator))


def _advance(row: RowState, token: int, tokenizer: Any, eos: int | None) -> str:
    """Add a token to a row; return the text that is now safe to send."""
    if token == eos:
        row.finish_reason = "stop"
        return _flush(row)
    row.ids.append(token)
    row.text = tokenizer.decode(row.ids, skip_special_tokens=True)
    for stop in row.sampling.stop:
        at = row.text.find(stop)
        if at != -1:
            row.text = row.text[:at]
            row.finish_reason = "stop"
            return _flush(row)
    if len(row.ids) >= row.sampling.max_tokens:
        row.finish_reason = "length"
        return _flush(row)
    # hold back what could still turn into a stop string, and half-decoded characters
    hold = max((len(s) - 1 for s in row.sampling.stop), default=0)
    safe = len(row.text) - hold
    if row.text.endswith("\ufffd"):
        safe = min(safe, len(row.text) - 1)
    if safe <= row.sent:
        return ""
    new, row.sent = row.text[row.sent : safe], safe
    return new


def _flush(row: RowState) -> str:
    new, row.sent = row.text[row.sent :], len(row.text)
    return new
