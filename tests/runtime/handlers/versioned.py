"""A test handler that says which version of its spec it was set up with: `model.example`
carries `{"version": N}` (and `"fail": true` makes setup fail)."""

from __future__ import annotations

import threading
from typing import Any

example = {"x": 1.0}
_version = threading.local()  # thread workers share the module: each keeps its own


def setup(device: str, spec: Any) -> None:
    settings = spec.model.example or {}
    if settings.get("fail"):
        raise RuntimeError(f"version {settings.get('version')} cannot load")
    _version.value = settings.get("version", 1)


def predict(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"version": _version.value, "worker": threading.get_ident()} for _ in batch]
