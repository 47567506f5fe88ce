"""JSON in workers: request bodies in, handler outputs out (numpy, torch and pydantic aware).

Integers stay exact at any size: orjson would read one beyond 64 bits as a float (and cannot
write one), so bodies are parsed by pydantic-core's parser (as fast, exact big integers) and
an output holding such an integer is written by pydantic-core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic_core
from pydantic import BaseModel


def parse(body: bytes) -> Any:
    """A request body as Python values; ValueError (with line and column) when it is not JSON.
    NaN and Infinity are not JSON and are refused (but see `out_of_range`: 1e999 parses)."""
    return pydantic_core.from_json(body, allow_inf_nan=False)


def out_of_range(value: Any) -> list[str | int] | None:
    """Where in parsed JSON the first number too large for a 64-bit float is (1e999 parses as
    infinity: the JSON is valid, the number is not), as pydantic's `loc`; None when there is
    none. One pass in Python, with lists of numbers summed in C (an infinity makes the sum
    infinite or NaN), so a large tensor body costs a few percent of its parse."""
    return None if _finite(value) else _infinite_at(value, [])


def _finite(value: Any) -> bool:
    kind = type(value)
    if kind is list:
        if value:
            first = type(value[0])
            try:
                if first is float or first is int:
                    total: Any = sum(value)
                elif first is list:  # a 2-D tensor: each row summed in C
                    total = sum(map(sum, value))
                else:
                    total = None
            except (TypeError, OverflowError):  # not all numbers (or an integer beyond a float)
                total = None
            if total is not None and total - total == 0:
                return True
        items: Any = value  # mixed, deeper, or a sum that overflowed from finite numbers: look at each
    elif kind is dict:
        items = value.values()
    else:
        return kind is not float or value - value == 0.0
    for item in items:
        kind = type(item)
        if kind is float:
            if item - item != 0.0:
                return False
        elif (kind is list or kind is dict) and not _finite(item):
            return False
    return True


def _infinite_at(value: Any, loc: list[str | int]) -> list[str | int] | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else loc
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _infinite_at(item, [*loc, key])
        if found is not None:
            return found
    return None


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
    """A handler's output as JSON. NaN and infinities have no JSON form: orjson would write
    them as `null`, breaking the published schema, so an answer holding one is an error
    (looked for only when the JSON holds a `null`, the one trace they leave)."""
    try:
        out = orjson.dumps(value, default=to_json_value, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        out = pydantic_core.to_json(value, fallback=to_json_value, inf_nan_mode="null")  # as orjson: a null
    if b"null" in out and (where := non_finite_at(value)) is not None:
        at = where or "its top"
        raise ValueError(
            f"non-finite output: the answer holds a NaN or infinite number at {at}: JSON has no such number"
        )
    return out


def non_finite_at(value: Any, where: str = "") -> str | None:
    """The path of the first NaN or infinite float in a handler's output, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    elif isinstance(value, BaseModel):
        return non_finite_at(value.model_dump(), where)
    elif getattr(value, "dtype", None) is not None and getattr(value.dtype, "kind", "") == "f":
        import numpy as np  # an array or a numpy scalar (numpy is there: it made it)

        bad = np.argwhere(~np.isfinite(np.asarray(value, dtype=np.float64)))
        if not len(bad):
            return None
        return where + "".join(f"[{i}]" for i in bad[0])
    else:
        return None
    for key, item in items:
        found = non_finite_at(item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]")
        if found is not None:
            return found.lstrip(".")
    return None
