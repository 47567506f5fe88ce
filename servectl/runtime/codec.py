"""Turning handler outputs into JSON bytes, in workers (orjson; numpy, torch and pydantic aware)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel


def _to_json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    tolist = getattr(value, "tolist", None)  # numpy / torch scalars and arrays
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def serialize(value: Any) -> bytes:
    return orjson.dumps(value, default=_to_json, option=orjson.OPT_SERIALIZE_NUMPY)
