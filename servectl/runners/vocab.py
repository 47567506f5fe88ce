"""A tokenizer's tokens as log-probabilities report them: each token's text and its true bytes.

Decoding one token alone gives U+FFFD for a token that holds part of a UTF-8 character, so
its bytes cannot come from its text: byte-level BPE (GPT-2, Llama 3, Qwen) maps each byte
to a printable character, inverted here; SentencePiece's byte fallback spells a byte
`<0xE2>`; its word boundary `▁` is a space. Concatenating the generated tokens' bytes gives
the generated text's UTF-8 (a special token that the text skips adds none).
"""

from __future__ import annotations

import functools
import re
from typing import Any

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable character of each byte, inverted (GPT-2's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class Vocabulary:
    """Token texts and bytes of one tokenizer (each looked up once), its special tokens and
    the ids that end a generation."""

    def __init__(self, tokenizer: Any, eos: frozenset[int]) -> None:
        self.tokenizer = tokenizer
        self.eos = eos
        self.special = frozenset(int(i) for i in getattr(tokenizer, "all_special_ids", ()) or ())
        added = getattr(tokenizer, "added_tokens_decoder", None) or {}
        self.added = {int(i): str(getattr(t, "content", t)) for i, t in added.items()}
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.byte_level = backend is not None and type(backend.decoder).__name__ == "ByteLevel"
        self._texts: dict[int, str] = {}
        self._bytes: dict[int, bytes] = {}

    def text(self, token: int) -> str:
        """The token decoded alone (U+FFFD where it holds part of a character)."""
        found = self._texts.get(token)
        if found is None:
            found = self._texts[token] = str(self.tokenizer.decode([token]))
        return found

    def bytes_of(self, token: int) -> bytes:
        """The token's own bytes."""
        found = self._bytes.get(token)
        if found is None:
            found = self._bytes[token] = self._lookup(token)
        return found

    def shown(self, token: int, skip_special: bool) -> bytes:
        """The bytes the token adds to a generated text: none for a special one it skips."""
        return b"" if skip_special and token in self.special else self.bytes_of(token)

    def _lookup(self, token: int) -> bytes:
        if token in self.added:
            return self.added[token].encode()
        piece = str(self.tokenizer.convert_ids_to_tokens(token))
        if self.byte_level:
            table = byte_decoder()
            if all(c in table for c in piece):
                return bytes(table[c] for c in piece)
        fallback = _BYTE_FALLBACK.fullmatch(piece)
        if fallback:
            return bytes([int(fallback.group(1), 16)])
        if "▁" in piece:
            return piece.replace("▁", " ").encode()
        return self.text(token).encode()
