"""The one JSON shape every error response has, built in the API process and in workers."""

from __future__ import annotations

from typing import Any

import orjson


def error_body(message: str, request_id: str, kind: str, detail: Any = None) -> bytes:
    """`{"error": {"type", "message", "request_id"[, "detail"]}}` as JSON bytes."""
    err: dict[str, Any] = {"type": kind, "message": message, "request_id": request_id}
    if detail is not None:
        err["detail"] = detail
    return orjson.dumps({"error": err})
