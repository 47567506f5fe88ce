"""An image-like payload through a worker and back: base64 in, decoded, re-encoded, returned."""

from __future__ import annotations

import base64

example = {"data": "aGVsbG8="}


def predict(batch: list[dict[str, str]]) -> list[dict[str, object]]:
    out = []
    for item in batch:
        raw = base64.b64decode(item.get("data", ""))
        out.append({"size": len(raw), "data": base64.b64encode(raw).decode()})
    return out
