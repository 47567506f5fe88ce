"""JSON in workers: request bodies in, handler outputs out (numpy, torch and pydantic aware).

Integers stay exact at any size: orjson would read one beyond 64 bits as a float (and cannot
write one), so bodies are parsed by pydantic-core's parser (as fast, exact big integers) and
an output holding such an integer is written by pydantic-core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pydantic_core
from pydantic import BaseModel


def parse(body: bytes) -> Any:
    """A request body as Python values; ValueError (with line and column) when it is not JSON.
    NaN and Infinity are not JSON and are refused."""
    return pydantic_core.from_json(body, allow_inf_nan=False)


def to_json_value(value: Any) -> Any:
    """A value JSON (or msgpack) has no type for, as the JSON types it stands for."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    tolist = getattr(value, "tolist", None)  # numpy / torch scalars and arrays
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(frozen=True, slots=True)
class Framed:
    """An answer of JSON then binary parts (V2's binary tensor data): `head` is serialized
    as JSON, the parts follow it as they are."""

    head: Any
    parts: list[bytes]


def serialize(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=to_json_value, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return pydantic_core.to_json(value, fallback=to_json_value)
