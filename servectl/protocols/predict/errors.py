"""servectl's own error shape: `{"error": {"type", "message", "request_id"[, "detail"]}}`.

Also what the HTTP layer answers before any route is known (431, 408, 503 at the door).
"""

from __future__ import annotations

from typing import Any

import orjson

from servectl.outcome import Failure

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "detail": {},
            },
            "required": ["type", "message", "request_id"],
        }
    },
    "required": ["error"],
}


def error_body(message: str, request_id: str, kind: str, detail: Any = None) -> bytes:
    """The error as JSON bytes."""
    err: dict[str, Any] = {"type": kind, "message": message, "request_id": request_id}
    if detail is not None:
        err["detail"] = detail
    return orjson.dumps({"error": err})


def failure_body(failure: Failure, request_id: str) -> bytes:
    """A typed failure in this shape."""
    return error_body(failure.message, request_id, failure.kind, failure.detail)
