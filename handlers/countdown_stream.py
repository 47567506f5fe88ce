"""A streaming handler: each request `{"n": 3}` streams `n` chunks, then its stream closes.

`predict` is a generator, so the answer streams (`api.stream: true` in
configs/countdown_stream.yaml). Each step yields one entry per request of the batch: a
chunk, `None` (nothing from that request this step) or `END` (its stream closes now while
its batch-mates go on). `request_model` makes each request a `Countdown` (so `r.n` works);
without it a request arrives as the parsed JSON, a dict (`r["n"]`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

from servectl.sdk import END


class Countdown(BaseModel):
    n: int = Field(ge=0, le=1000, description="How many chunks to stream.")


request_model = Countdown
example = {"n": 3}  # what `servectl validate --smoke` and the OpenAPI page send


def predict(batch: list[Countdown]) -> Iterator[list[Any]]:
    for step in range(max(r.n for r in batch) + 1):
        yield [{"token": step} if step < r.n else (END if step == r.n else None) for r in batch]
