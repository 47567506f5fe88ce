"""The raw model's own throughput: the handler in-process, no HTTP, at fixed batch sizes."""

from __future__ import annotations

import time
from typing import Any

import orjson

from servectl.runners import build_handler
from servectl.sdk import Many
from servectl.spec import Spec

BATCH_SIZES = (1, 8, 32, 64)


def measure_baseline(spec: Spec, payload: bytes, seconds: float = 2.0) -> dict[int, float]:
    """Items per second of decode-free `predict` at each batch size (what serving could reach)."""
    handler = build_handler(spec)
    handler.setup("cpu" if spec.devices.accelerator != "cuda" else "cuda:0", spec)
    decoded = handler.decode(handler.validate(orjson.loads(payload)))
    item: Any = decoded[0] if isinstance(decoded, Many) else decoded
    rates: dict[int, float] = {}
    for size in BATCH_SIZES:
        batch = [item] * size
        handler.unbatch(handler.predict(handler.batch(batch)), size)  # warm-up
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / len(BATCH_SIZES) or done == 0:
            handler.unbatch(handler.predict(handler.batch(batch)), size)
            done += size
        rates[size] = round(done / elapsed, 2)
    return rates


def matching_batch(concurrency: int, max_batch_size: int, measured: dict[int, float]) -> int:
    """The baseline batch size a concurrency level can reach: min(c, max_batch_size), rounded
    down to a measured size."""
    reachable = min(concurrency, max_batch_size)
    candidates = [b for b in measured if b <= reachable]
    return max(candidates) if candidates else min(measured)
