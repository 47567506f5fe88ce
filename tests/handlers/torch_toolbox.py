"""tests/handlers/toolbox.py with torch imported at the top, as a real model's handler does:
the API process must still never load it (the worker does: answers say `torch_in_worker`)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch  # noqa: F401  (imported for its side effect: torch is in the worker's sys.modules)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toolbox import Request, decode, example, predict, setup

__all__ = ["Request", "decode", "example", "predict", "setup"]
