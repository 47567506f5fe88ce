"""A predict handler for reload tests: its "weights" are the JSON file its spec entry's
`model.path` names, read in setup, so a reload (which re-reads the spec) shows in its answers.

The weights file: {"version": "v1"} and optionally "setup_s" (seconds setup takes) and
"corrupt": true (setup raises, as a model whose weights do not load). A missing file fails
setup too. Each answer: {"y": 2x, "version", "pid"}.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pydantic import BaseModel

_weights: dict[str, Any] = {}


class Request(BaseModel):
    x: float = 0.0
    sleep: float = 0.0


def setup(device: str, spec: Any) -> None:
    path = spec.model_path()
    weights = json.loads(path.read_text())
    if weights.get("corrupt"):
        raise RuntimeError(f"{path.name}: the weights are corrupt")
    time.sleep(float(weights.get("setup_s", 0)))
    _weights.update(weights)


def decode(request: Request) -> Request:
    return request


def predict(batch: list[Request]) -> list[dict[str, Any]]:
    pause = max(r.sleep for r in batch)
    if pause:
        time.sleep(pause)
    return [{"y": 2 * r.x, "version": _weights["version"], "pid": os.getpid()} for r in batch]
