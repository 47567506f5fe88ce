"""The hand-written client runtimes (`pyruntime.py`, `tsruntime.ts`) as generated clients carry them."""

from __future__ import annotations

import json
from pathlib import Path

_MARKER = "client runtime: copied into generated clients from here"
_PLACEHOLDER_URL = '"http://127.0.0.1:8000"'


def copied_runtime(filename: str, default_url: str) -> str:
    """A hand-written client runtime (`pyruntime.py`, `tsruntime.ts`) from its marker line on,
    with the deployment's address in place of the placeholder default URL."""
    text = (Path(__file__).parent / filename).read_text()
    start = text.index("\n", text.index(_MARKER)) + 1
    return text[start:].replace(_PLACEHOLDER_URL, json.dumps(default_url), 1)
