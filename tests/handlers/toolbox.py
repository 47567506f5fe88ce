"""A test handler whose every misbehaviour is chosen by the request.

It imports no torch (a worker starts in a fraction of the time): squares are computed in
float32 with numpy, bit for bit what torch computes. `torch_toolbox.py` is this handler with
torch imported at the top, for the test that the API process never loads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

example = {"x": 2.0}
_seen = {"items": 0, "batches": 0}


class Request(BaseModel):
    x: float = 0.0
    sleep: float = 0.0
    fail: bool = False
    unpicklable: bool = False
    crash: bool = False
    wrong_length: bool = False
    unserializable: bool = False
    hang: bool = False  # never returns (until the process is killed)
    spawn_child: str | None = None  # start a `sleep` child, write its pid to this file, then crash
    echo: Any = None  # returned as parsed (e.g. integers beyond 64 bits)


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def setup(device: str, spec: object) -> None:
    marker = os.environ.get("TOOLBOX_FAIL_SETUP_IF")
    if marker and Path(marker).exists():
        raise RuntimeError("model weights are corrupt (marker file present)")
    if os.environ.get("TOOLBOX_FAIL_SETUP"):
        raise RuntimeError("model weights are corrupt")
    time.sleep(float(os.environ.get("TOOLBOX_SETUP_SLEEP", "0")))
    assert device == "cpu"


def decode(request: Request) -> Request:
    return request


def predict(batch: list[Request]) -> list[object]:
    _seen["batches"] += 1
    _seen["items"] += len(batch)
    for r in batch:
        if r.spawn_child:
            child = subprocess.Popen(["sleep", "60"])
            Path(r.spawn_child).write_text(str(child.pid))
            os._exit(9)
    if any(r.crash for r in batch):
        os._exit(9)
    if any(r.hang for r in batch):
        threading.Event().wait()
    pause = max(r.sleep for r in batch)
    if pause:
        time.sleep(pause)
    if any(r.fail for r in batch):
        raise ValueError("boom: the model rejected this input")
    if any(r.unpicklable for r in batch):
        raise Unpicklable()
    if any(r.wrong_length for r in batch):
        return [None] * (len(batch) + 1)
    squares = np.asarray([r.x for r in batch], dtype=np.float32) ** 2
    return [
        object()
        if r.unserializable
        else {
            "y": float(v),
            "batch_size": len(batch),
            "pid": os.getpid(),
            "items_seen": _seen["items"],
            "torch_in_worker": "torch" in sys.modules,
            **({"echo": r.echo} if r.echo is not None else {}),
        }
        for r, v in zip(batch, squares.tolist(), strict=True)
    ]
