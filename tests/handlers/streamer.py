"""A streaming test handler: `predict` is a generator yielding one chunk per request per step."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pydantic import BaseModel

from servectl.sdk import END

example = {"n": 3}


class Request(BaseModel):
    n: int = 3
    delay: float = 0.0
    fail_at: int | None = None
    silent: int = 0  # steps computed before the first chunk
    hang_at: int | None = None  # the step at which generation stops yielding for good
    pad_kb: int = 0  # chunk size
    log_to: str | None = None  # a file that gets one line per step computed


def decode(request: Request) -> Request:
    return request


def predict(batch: list[Request]):  # type: ignore[no-untyped-def]
    silent = max(r.silent for r in batch)
    for step in range(silent):  # e.g. a long prefill: nothing to stream yet
        _step_done(batch, step)
        time.sleep(max(r.delay for r in batch))
        yield [None] * len(batch)
    longest = max(r.n for r in batch)
    for step in range(longest + 1):
        time.sleep(max(r.delay for r in batch))
        _step_done(batch, silent + step)
        if any(r.fail_at == step for r in batch):
            raise RuntimeError(f"generation failed at step {step}")
        if any(r.hang_at == step for r in batch):
            threading.Event().wait()
        yield [_chunk(r, step, len(batch)) if step < r.n else (END if step == r.n else None) for r in batch]


def _chunk(r: Request, step: int, size: int) -> dict[str, object]:
    chunk: dict[str, object] = {"token": step, "of": r.n, "batch": size}
    if r.pad_kb:
        chunk["pad"] = "x" * (r.pad_kb * 1024)
    return chunk


def _step_done(batch: list[Request], step: int) -> None:
    for r in batch:
        if r.log_to:
            with open(Path(r.log_to), "a") as f:
                f.write(f"{step}\n")
