"""The token engine: iteration-level (continuous) batching over a transformers causal LM.

Sequences join the running batch between decoding steps and leave it as soon as they end,
as TGI does for models without paged attention: a joining group is prefilled on its own
(left-padded), then its KV cache is concatenated to the running one (the shorter one padded
on the left); finished rows are filtered out of the cache, and columns no row attends to any
more are trimmed. Positions are explicit, so left padding never shifts a row's positions and
a row decodes the same tokens in any batch (up to float rounding).

`static=True` is the classic batcher, kept for comparison: a group joins only an empty engine
and every row computes until the longest one ends.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from servectl.runners.grammar import constrain
from servectl.runners.sampling import choose, prompt_logprobs
from servectl.runners.sequence import Sequence
from servectl.runners.vocab import Vocabulary

JOIN_AFTER_STEPS = 8  # the longest a sequence waits to join a running batch, in steps


class Engine(Protocol):
    """What a generation job needs from the engine that advances its sequences."""

    @property
    def busy(self) -> bool: ...
    def add(self, seqs: list[Sequence]) -> None: ...
    def remove(self, seqs: Iterable[Sequence]) -> None: ...
    def step(self) -> None: ...


class Job(Protocol):
    """One request's generation, as its protocol sees it."""

    @property
    def engine(self) -> Engine: ...

    def progress(self) -> Any:
        """After a step: this request's entry (a chunk, Chunks, Final, END) or None; raises
        the error of a sequence that failed."""

    def close(self) -> None:
        """Stop: its sequences leave the engine."""


class Detokenizer:
    """Incremental detokenization: each token decodes a short window, never the whole row.
    A fast tokenizer's own `DecodeStream` (Rust) does it in one call per token; otherwise the
    prefix/read offsets of TGI and vLLM. Both start from the prompt's last tokens, so a first
    token's leading space survives tokenizers that drop it at a text's start. The bytes of a
    character not complete yet wait in `pending`: `flush()` gives them (U+FFFD) at the end."""

    __slots__ = ("pending", "prefix", "read", "skip", "stream", "tokenizer", "tokens", "vocab")

    def __init__(self, tokenizer: Any, prompt: list[int], vocab: Vocabulary | None = None, skip: bool = True) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.skip = skip
        self.pending = b""
        self.tokens = list(prompt[-5:])
        self.prefix = 0
        self.read = len(self.tokens)
        self.stream: Any = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers.decoders import DecodeStream

            self.tokenizer = backend
            self.stream = DecodeStream(ids=self.tokens, skip_special_tokens=skip)

    def push(self, token: int) -> str:
        text = self._push(token)
        if self.vocab is not None:
            self.pending = b"" if text else self.pending + self.vocab.shown(token, self.skip)
        return text

    def flush(self) -> str:
        """What the last tokens hold of a character never completed (U+FFFD), at the end."""
        text, self.pending = self.pending.decode("utf-8", "replace"), b""
        return text

    def _push(self, token: int) -> str:
        if self.stream is not None:
            return self.stream.step(self.tokenizer, token) or ""
        self.tokens.append(token)
        decode = self.tokenizer.decode
        before = decode(self.tokens[self.prefix : self.read], skip_special_tokens=self.skip)
        text = decode(self.tokens[self.prefix :], skip_special_tokens=self.skip)
        if len(text) <= len(before) or text.endswith("\ufffd"):
            return ""  # nothing new yet, or half a character
        self.prefix, self.read = self.read, len(self.tokens)
        if self.prefix > 64:  # keep the window short
            del self.tokens[: self.prefix]
            self.read -= self.prefix
            self.prefix = 0
        return str(text[len(before) :])


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    found = set(ids if isinstance(ids, list) else [ids])
    found.add(tokenizer.eos_token_id)
    return frozenset(i for i in found if i is not None)


class TokenEngine:
    """Advances every running sequence by one token per step; see the module's docstring."""

    def __init__(
        self, model: Any, tokenizer: Any, context: int, max_rows: int, max_prefill_tokens: int, static: bool = False
    ) -> None:
        import torch
        from transformers.cache_utils import Cache

        self.torch = torch
        self.cache_type = Cache
        self.layer_type = roomy_layer_class()
        self.model = model
        self.tokenizer = tokenizer
        self.context = context
        self.max_rows = max_rows
        self.max_prefill_tokens = max_prefill_tokens
        self.static = static
        self.device = next(model.parameters()).device
        self.eos = eos_ids(model, tokenizer)
        self.vocab = Vocabulary(tokenizer, self.eos)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos), 0)
        self.running: list[Sequence] = []
        self.waiting: deque[Sequence] = deque()
        self._waited = 0  # steps the oldest waiting sequence has waited to join
        self._reset()

    def _reset(self) -> None:
        self.running = []
        self.past: Any = None  # the running batch's KV cache: a RoomyLayer per model layer
        self.mask: Any = None  # [rows, time]: 1 where a row has a token
        self.last: Any = None  # [rows]: each row's next input token
        self.positions: Any = None  # [rows]: each row's next position

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def add(self, seqs: list[Sequence]) -> None:
        """Queue sequences; they join at the next step that has room for them."""
        for seq in seqs:
            if seq.sampling.seed is not None:
                seq.generator = self.torch.Generator(device=self.device).manual_seed(seq.sampling.seed)
            seq.state = Detokenizer(self.tokenizer, seq.prompt, self.vocab, seq.sampling.skip_special_tokens)
            self.waiting.append(seq)

    def remove(self, seqs: Iterable[Sequence]) -> None:
        """Stop sequences (cancelled): they leave before the next step computes anything."""
        for seq in seqs:
            if not seq.done:
                seq.finish_reason = "cancelled"
        self.waiting = deque(seq for seq in self.waiting if not seq.done)
        self._filter(force=True)

    def step(self) -> None:
        """One token for every running sequence, and a first token for those that join. A
        failed step fails every sequence it held (the model itself failed), and resets."""
        joining: list[Sequence] = []
        try:
            with self.torch.inference_mode():
                if self.running:
                    self._decode()
                joining = self._admit()
                if joining:
                    self._prefill(joining)
        except Exception as exc:
            for seq in [*self.running, *joining]:
                seq.fail(exc)
            self._reset()
            return
        self._filter()

    # --- one step ---------------------------------------------------------------------

    def _forward(self, ids: Any, mask: Any, positions: Any, past: Any, every: bool = False) -> tuple[Any, Any]:
        """The last position's logits (`every`: all positions'), and the cache."""
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
        )
        return (out.logits if every else out.logits[:, -1, :]).float(), out.past_key_values

    def _decode(self) -> None:
        torch = self.torch
        mask = torch.cat([self.mask, self.mask.new_ones((len(self.running), 1))], dim=1)
        logits, _ = self._forward(self.last[:, None], mask, self.positions[:, None], self.past)
        self.mask = mask
        self.positions = self.positions + 1
        self.last = self._advance(self.running, logits)

    def _admit(self) -> list[Sequence]:
        """Who joins now. Joining costs a prefill pass and a cache rebuild, so while rows run,
        joiners gather until there are a quarter as many as running rows, or the oldest has
        waited JOIN_AFTER_STEPS steps (TGI's waiting_served_ratio and max_waiting_tokens);
        then as many as there are free rows join, while their padded prompts fit the prefill
        budget (the first always joins)."""
        live = sum(not seq.done for seq in self.running)
        if self.running and (self.static or not self.waiting):
            self._waited = 0
            return []
        if live and len(self.waiting) < max(1, live // 4) and self._waited < JOIN_AFTER_STEPS:
            self._waited += 1
            return []
        self._waited = 0
        room = self.max_rows - live
        joining: list[Sequence] = []
        longest = 0
        while self.waiting and len(joining) < room:
            longest = max(longest, len(self.waiting[0].prompt))
            if joining and not self.static and longest * (len(joining) + 1) > self.max_prefill_tokens:
                break
            joining.append(self.waiting.popleft())
        return joining

    def _prefill(self, seqs: list[Sequence]) -> None:
        torch = self.torch
        width = max(len(seq.prompt) for seq in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, width - len(seq.prompt) :] = torch.tensor(seq.prompt)
            mask[i, width - len(seq.prompt) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        every = any(seq.sampling.prompt_logprobs is not None for seq in seqs)
        logits, past = self._forward(ids, mask, positions, None, every)
        if every:
            for i, seq in enumerate(seqs):
                k = seq.sampling.prompt_logprobs
                if k is not None:
                    seq.prompt_logprobs = prompt_logprobs(
                        logits[i, width - len(seq.prompt) :], seq.prompt, k, self.vocab
                    )
            logits = logits[:, -1, :]
        last = self._advance(seqs, logits)
        self._merge(seqs, [(layer.keys, layer.values) for layer in past.layers], mask, last, mask.sum(-1))

    def _advance(self, seqs: list[Sequence], logits: Any) -> Any:
        """Each row's next token, appended; rows end on EOS (unless `ignore_eos`), a stop
        string, their budget, the context's end (then with what they hold of a character
        never completed) or their grammar's end. A constrained row chooses among the tokens
        its grammar allows (runners.grammar). Returns the next input ids."""
        tokens = choose(constrain(logits, seqs), seqs, self.vocab)
        for seq, token in zip(seqs, tokens, strict=True):
            if seq.done:
                continue  # a static batch's finished row: computed, not used
            if token in self.eos and not seq.sampling.ignore_eos:
                seq.text += seq.state.flush()
                seq.finish_reason = "stop"
                continue
            seq.ids.append(token)
            seq.extend(seq.state.push(token))
            if seq.grammar is not None:
                seq.grammar.advance(seq, token)
            if not seq.done and len(seq.prompt) + len(seq.ids) >= self.context:
                seq.finish_reason = "length"
            if seq.finish_reason == "length":
                seq.text += seq.state.flush()
        return self.torch.tensor(tokens, device=self.device)

    # --- the running batch's shape ----------------------------------------------------------

    @property
    def cache(self) -> list[tuple[Any, Any]]:
        """The running batch's keys and values per layer: [rows, heads, time, dim]."""
        return [(layer.keys, layer.values) for layer in self.past.layers] if self.past is not None else []

    def _set_cache(self, blocks: list[list[tuple[Any, Any]]], width: int) -> None:
        """The running batch's cache, made of row blocks (each a list of per-layer keys and
        values), each right-aligned in `width` columns, with room to grow: one copy each."""
        spare = min(max(self.context - width, 1), 64)
        layers = [self.layer_type([block[i] for block in blocks], width, spare) for i in range(len(blocks[0]))]
        self.past = self.cache_type(layers=layers)

    def _merge(self, seqs: list[Sequence], cache: list[tuple[Any, Any]], mask: Any, last: Any, positions: Any) -> None:
        """Joiners join the running rows, and finished rows leave, in one cache rebuild."""
        keep = [i for i, seq in enumerate(self.running) if not seq.done]
        if not keep:
            self.running, self.mask, self.last, self.positions = list(seqs), mask, last, positions
            self._set_cache([cache], mask.shape[1])
            return
        torch = self.torch
        idx = torch.tensor(keep, device=self.device)
        old_mask = self.mask[idx]
        first = int(old_mask.any(0).int().argmax())
        old_mask = old_mask[:, first:]
        width = max(old_mask.shape[1], mask.shape[1])
        pad = torch.nn.functional.pad
        self.mask = torch.cat([pad(old_mask, (width - old_mask.shape[1], 0)), pad(mask, (width - mask.shape[1], 0))])
        self._set_cache([[(k[idx, :, first:], v[idx, :, first:]) for k, v in self.cache], cache], width)
        self.last = torch.cat([self.last[idx], last])
        self.positions = torch.cat([self.positions[idx], positions])
        self.running = [self.running[i] for i in keep] + seqs

    def _filter(self, force: bool = False) -> None:
        """Finished rows leave the batch, and time columns that no remaining row attends to
        are dropped: at once when forced (cancellation), else once they are a quarter of the
        batch (a rebuild costs a copy of the cache; until then they ride along, or leave with
        the next join), a static batch's only once all are done."""
        keep = [i for i, seq in enumerate(self.running) if not seq.done]
        dead = len(self.running) - len(keep)
        if not dead or (keep and not force and (self.static or dead * 4 < len(self.running))):
            return
        if not keep:
            self._reset()
            return
        idx = self.torch.tensor(keep, device=self.device)
        self.running = [self.running[i] for i in keep]
        mask = self.mask[idx]
        first = int(mask.any(0).int().argmax())
        self.mask = mask[:, first:]
        self._set_cache([[(k[idx, :, first:], v[idx, :, first:]) for k, v in self.cache]], self.mask.shape[1])
        self.last = self.last[idx]
        self.positions = self.positions[idx]


@functools.cache
def roomy_layer_class() -> Any:
    """The RoomyLayer class (made once transformers is imported)."""
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):  # type: ignore[no-untyped-call]
        """A cache layer with spare columns: a decoding step writes its keys and values in
        place (transformers' DynamicLayer concatenates, copying the whole cache every step);
        built from row blocks right-aligned in one buffer (joins and leaves copy once); it
        doubles when full."""

        def __init__(self, blocks: list[tuple[Any, Any]], width: int, spare: int) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            keys = blocks[0][0]
            rows = sum(k.shape[0] for k, _ in blocks)
            self._k = keys.new_empty((rows, keys.shape[1], width + spare, keys.shape[-1]))
            self._v = keys.new_empty((rows, blocks[0][1].shape[1], width + spare, blocks[0][1].shape[-1]))
            row = 0
            for k, v in blocks:
                n, t = k.shape[0], k.shape[-2]
                for buffer, part in ((self._k, k), (self._v, v)):
                    buffer[row : row + n, :, : width - t].zero_()  # left padding: masked, but never NaN
                    buffer[row : row + n, :, width - t : width] = part
                row += n
            self._show(width)
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True

        def _show(self, length: int) -> None:
            self.length = length
            self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            n = key_states.shape[-2]
            end = self.length + n
            if end > self._k.shape[-2]:  # full: double
                grown = type(self)([(self.keys, self.values)], self.length, max(n, self.length))
                self._k, self._v = grown._k, grown._v
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
            self._show(end)
            return self.keys, self.values

    return RoomyLayer
