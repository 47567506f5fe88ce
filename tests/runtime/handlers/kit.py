"""A test handler for in-process runtime tests: each misbehaviour is chosen by the request.

Unlike tests/handlers/toolbox.py it imports no torch (fast) and never ends the process: a
"crash" raises SystemExit, which ends a thread worker as os._exit ends a process.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, Field

from servectl.sdk import Many

example = {"x": 2.0}


class Request(BaseModel):
    x: float = 0.0
    sleep: float = Field(0.0, ge=0, le=5)
    fail: bool = False  # predict raises for a batch holding this request
    wrong_length: bool = False  # predict returns one output too many
    exit: bool = False  # the worker ends (SystemExit), holding this batch
    hang_until: str | None = None  # predict blocks until this file exists (at most 10 s)
    many: int = Field(0, ge=0)  # decode makes this many items of one request


def decode(request: Request) -> Request | Many:
    if request.many:
        return Many([request.model_copy(update={"many": 0, "x": request.x + i}) for i in range(request.many)])
    return request


def predict(batch: list[Request]) -> list[object]:
    if any(r.exit for r in batch):
        raise SystemExit(9)
    for r in batch:
        if r.hang_until:
            deadline = time.monotonic() + 10
            while not Path(r.hang_until).exists() and time.monotonic() < deadline:
                time.sleep(0.002)
    time.sleep(max(r.sleep for r in batch))
    if any(r.fail for r in batch):
        raise ValueError("boom: the model rejected this input")
    if any(r.wrong_length for r in batch):
        return [None] * (len(batch) + 1)
    return [{"y": r.x**2, "batch_size": len(batch)} for r in batch]
