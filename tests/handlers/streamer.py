"""A streaming test handler: `predict` is a generator yielding one chunk per request per step."""

from __future__ import annotations

import time

from pydantic import BaseModel

from servectl.handler import END

example = {"n": 3}


class Request(BaseModel):
    n: int = 3
    delay: float = 0.0
    fail_at: int | None = None


def decode(request: Request) -> Request:
    return request


def predict(batch: list[Request]):  # type: ignore[no-untyped-def]
    longest = max(r.n for r in batch)
    for step in range(longest + 1):
        time.sleep(max(r.delay for r in batch))
        if any(r.fail_at == step for r in batch):
            raise RuntimeError(f"generation failed at step {step}")
        yield [
            {"token": step, "of": r.n, "batch": len(batch)} if step < r.n else (END if step == r.n else None)
            for r in batch
        ]
