"""How a request ended, as a type: made by workers and the scheduler, formatted once, at the
edge, in the shape of the protocol that asked (servectl's, OpenAI's or V2's).

`Reply`, `Failure`, `Ended` and `Gone` travel from workers (msgspec Structs, tagged, so a
worker's results decode to the right type); `Streaming` exists only in the API process.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Reply(msgspec.Struct, frozen=True, array_like=True, tag=True, gc=False):
    """A whole answer: a JSON body (already serialized by the worker), status 200; or, with
    `json_length`, a framed one: that many bytes of JSON, then binary data (V2's)."""

    body: bytes
    json_length: int | None = None


class Failure(msgspec.Struct, frozen=True, array_like=True, tag=True, gc=False):
    """An error answer. `kind` is servectl's error type (`validation_error`, `timeout`...);
    `detail` is JSON (for 422s, the failing fields)."""

    status: int
    kind: str
    message: str
    detail: Any = None

    @property
    def retry(self) -> bool:
        """Worth retrying later: answered with `Retry-After`."""
        return self.status in (429, 503)


class Ended(msgspec.Struct, frozen=True, array_like=True, tag=True, gc=False):
    """A stream's clean end (after its chunks, or with none)."""


class Streaming(msgspec.Struct, frozen=True):
    """A request's first streamed chunk has arrived: the answer is a stream."""


class Gone(msgspec.Struct, frozen=True, array_like=True, tag=True, gc=False):
    """The client went away (or its stream was cancelled): nothing is sent; logged as 499."""


ENDED = Ended()
STREAMING = Streaming()
GONE = Gone()
CLIENT_GONE = 499  # the status logged and counted for a client that went away

Answer = Reply | Failure | Ended | Gone  # what a worker (or the scheduler) ends a request with
Outcome = Reply | Failure | Ended | Streaming | Gone  # what a request's future resolves to


def status_of(outcome: Outcome) -> int:
    """The HTTP status an outcome is logged with."""
    if isinstance(outcome, Failure):
        return outcome.status
    return CLIENT_GONE if isinstance(outcome, Gone) else 200
