"""Compressed bodies: a request's `Content-Encoding` (gzip, deflate) inflated as it is read,
under the body limit; a large answer gzipped (or deflated) for a client whose
`Accept-Encoding` takes it.

The API process otherwise frames bytes only (workers parse). Inflating lives here because
the body limit (`limits.max_body_mb`) does, and the limit counts the inflated size: a small
body that inflates to gigabytes (a "zip bomb") is a 413 once the limit is passed, having
read and inflated no more than the limit.
"""

from __future__ import annotations

import asyncio
import zlib

from servectl.outcome import Failure

_GZIP = 16 + zlib.MAX_WBITS  # gzip's header and trailer around deflate data
_ZLIB = zlib.MAX_WBITS  # what HTTP's "deflate" is (RFC 9110): zlib's header and trailer
_RAW = -zlib.MAX_WBITS  # bare deflate data, which some clients send as "deflate"
_CODINGS = {b"gzip": "gzip", b"x-gzip": "gzip", b"deflate": "deflate"}

ANSWER_LEVEL = 1  # zlib's fastest: JSON still shrinks about as much as at 6, at a third of the CPU
_ANSWER_WINDOW = 12  # a 4 KiB window: a fraction of the default's set-up cost, about the same size
IN_A_THREAD = 1 << 20  # answers this large are compressed off the event loop (zlib lets go of the GIL)
VARY = (b"vary", b"accept-encoding")


class BodyTooLarge(Exception):
    """The request body passed `limits.max_body_mb` (decompressed, when it came compressed)."""


class UnreadableBody(Exception):
    """A body servectl cannot read for its `Content-Encoding`: 415 for a coding it does not
    take, 400 for a body that does not inflate."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def inflater_for(content_encoding: bytes, limit: int) -> Inflater | None:
    """The inflater for a request's `Content-Encoding` (None: identity, nothing to do).
    Raises UnreadableBody (415) naming any other coding: br, zstd, compress, or several
    codings stacked."""
    codings = [c for c in (part.strip().lower() for part in content_encoding.split(b",")) if c and c != b"identity"]
    if not codings:
        return None
    coding = _CODINGS.get(codings[0]) if len(codings) == 1 else None
    if coding is None:
        name = content_encoding.decode("latin-1")[:100]
        msg = f"unsupported Content-Encoding {name!r}: send gzip, deflate or identity (one of them)"
        raise UnreadableBody(Failure(415, "unsupported_media_type", msg))
    return Inflater(coding, limit)


class Inflater:
    """Inflates one request body as its pieces come (`feed`, then `end`), `limit` bytes in
    all at most: past that, BodyTooLarge, having inflated at most one byte more. Data that
    does not inflate: UnreadableBody (400) naming the coding."""

    __slots__ = ("coding", "head", "limit", "size", "zlib")

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding  # "gzip" | "deflate"
        self.limit = limit
        self.size = 0  # inflated so far
        self.zlib: zlib._Decompress | None = None  # made on the first bytes (deflate: told by its first two)
        self.head = b""  # deflate's first byte while the second has not come

    def feed(self, data: bytes) -> bytes:
        """The inflated bytes of the next piece of the body."""
        if self.zlib is None:
            if self.coding == "deflate":
                data = self.head + data
                if len(data) < 2:
                    self.head = data
                    return b""
                self.head = b""
                self.zlib = zlib.decompressobj(_ZLIB if _zlib_header(data) else _RAW)
            elif data:
                self.zlib = zlib.decompressobj(_GZIP)
        out: list[bytes] = []
        while data:
            inflating = self.zlib
            assert inflating is not None
            if inflating.eof:  # a stream ended and more data follows
                if self.coding != "gzip":
                    raise self._bad("data after the end of the compressed stream")
                inflating = self.zlib = zlib.decompressobj(_GZIP)  # the next member of a multi-member gzip
            try:  # never more than one byte past the limit: a bomb stops here
                piece = inflating.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                raise self._bad(str(exc)) from None
            self.size += len(piece)
            if self.size > self.limit:
                raise BodyTooLarge
            out.append(piece)
            data = inflating.unconsumed_tail or (inflating.unused_data if inflating.eof else b"")
        return out[0] if len(out) == 1 else b"".join(out)

    def end(self) -> None:
        """The body is all in: it must end where its compressed data does (an empty body is
        an empty body)."""
        if self.head or (self.zlib is not None and not self.zlib.eof):
            raise self._bad("the compressed data is cut short")

    def _bad(self, why: str) -> UnreadableBody:
        msg = f"request body is not valid {self.coding} data (Content-Encoding: {self.coding}): {why}"
        return UnreadableBody(Failure(400, "bad_request", msg))


def _zlib_header(data: bytes) -> bool:
    """Whether `data` starts as a zlib stream does (deflate, a check multiple of 31)."""
    return data[0] & 0x0F == 8 and data[0] >> 4 <= 7 and (data[0] << 8 | data[1]) % 31 == 0


def answer_coding(accept_encoding: bytes | None) -> bytes | None:
    """The coding to compress an answer with for a client's `Accept-Encoding`: gzip when it
    takes gzip, else deflate when it takes that; None: neither (or the header is absent).
    A coding with `q=0` is refused; `*` stands for any coding the header does not name."""
    if not accept_encoding:
        return None
    weights: dict[bytes, bool] = {}
    for part in accept_encoding.lower().split(b","):
        name, _, params = part.partition(b";")
        accepted = True
        for param in params.split(b";"):
            key, _, value = param.partition(b"=")
            if key.strip() == b"q":
                try:
                    accepted = float(value) > 0
                except ValueError:
                    accepted = False
        weights[b"gzip" if (name := name.strip()) == b"x-gzip" else name] = accepted
    anything = weights.get(b"*", False)
    for coding in (b"gzip", b"deflate"):
        if weights.get(coding, anything):
            return coding
    return None


def compress(body: bytes, coding: bytes) -> bytes:
    """`body` as gzip or (HTTP's) deflate data."""
    window = _ANSWER_WINDOW + 16 if coding == b"gzip" else _ANSWER_WINDOW
    compressor = zlib.compressobj(ANSWER_LEVEL, zlib.DEFLATED, window, 8)
    return compressor.compress(body) + compressor.flush()


async def compressed(body: bytes, coding: bytes) -> bytes:
    """`compress`, in a thread for a large body so the event loop goes on answering others."""
    if len(body) >= IN_A_THREAD:
        return await asyncio.to_thread(compress, body, coding)
    return compress(body, coding)
