"""What PyTorch and ONNX runners share: the tensor request shape, checks, batching by shape.

Request: `{"inputs": X, "parameters": {...}}`, X a nested list (the model's one input) or a
dict of named nested lists; the first axis is the batch axis, so N rows are N items.
Response: `{"outputs": Y}`, Y a nested list (one output) or a dict of named nested lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from servectl.sdk import InvalidInput, Many

Row = dict[str, np.ndarray]


class TensorRequest(BaseModel):
    inputs: list[Any] | dict[str, list[Any]] = Field(
        description="A nested list (the model's one input) or named nested lists; axis 0 is the batch axis."
    )
    parameters: dict[str, Any] = Field(default_factory=dict)


class TensorResponse(BaseModel):
    outputs: list[Any] | dict[str, list[Any]]


@dataclass(frozen=True)
class TensorSpec:
    """One model input: its name, numpy dtype and shape (None for a dynamic axis)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...] | None  # None: unknown rank (TorchScript)

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name} ({self.dtype})"
        dims = ", ".join("-1" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] ({self.dtype})"


def _array(name: str, data: Any, spec: TensorSpec) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # an overflow is answered below, not warned about
            arr = np.asarray(data, dtype=spec.dtype)
    except OverflowError as exc:  # a value beyond an integer type
        raise InvalidInput(
            f"input {name!r}: a value is out of range for {spec.dtype}: {exc}", f"inputs.{name}", status=400
        ) from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {name!r} is not a rectangular {spec.dtype} array: {exc}", f"inputs.{name}") from None
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # JSON has none: a value beyond float32's range
        raise InvalidInput(f"input {name!r}: a value is out of range for {spec.dtype}", f"inputs.{name}", status=400)
    if arr.ndim == 0:
        raise InvalidInput(f"input {name!r} needs a batch axis: send [[...]] for one item", f"inputs.{name}")
    check_shape(name, arr, spec)
    return arr


def check_shape(name: str, arr: np.ndarray, spec: TensorSpec) -> None:
    """Raise InvalidInput when an array's rank or fixed axes do not fit a model input."""
    if spec.shape is None:
        return
    fixed = zip(arr.shape[1:], spec.shape[1:], strict=False)
    if arr.ndim != len(spec.shape) or any(want is not None and got != want for got, want in fixed):
        got = "[" + ", ".join(str(d) for d in arr.shape) + "]"
        raise InvalidInput(f"input {name!r} has shape {got}; the model expects {spec.describe()}", f"inputs.{name}")


def decode_tensors(request: TensorRequest, inputs: list[TensorSpec]) -> Many:
    """A request as a list of rows, one {input name: array} per item (none for `[]`)."""
    if isinstance(request.inputs, list) and not request.inputs:
        return Many()  # zero items: answered `{"outputs": []}`
    by_name = {s.name: s for s in inputs}
    if isinstance(request.inputs, dict):
        unknown = sorted(set(request.inputs) - set(by_name))
        missing = sorted(set(by_name) - set(request.inputs))
        if unknown or missing:
            raise InvalidInput(
                f"unknown inputs {unknown}, missing inputs {missing}; the model takes "
                + ", ".join(s.describe() for s in inputs)
            )
        arrays = {name: _array(name, data, by_name[name]) for name, data in request.inputs.items()}
    else:
        if len(inputs) != 1:
            raise InvalidInput("this model takes named inputs: " + ", ".join(s.describe() for s in inputs))
        arrays = {inputs[0].name: _array(inputs[0].name, request.inputs, inputs[0])}
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1:
        raise InvalidInput(f"named inputs disagree on the number of items (axis 0): {sorted(counts)}")
    n = counts.pop()
    return Many({name: arr[i] for name, arr in arrays.items()} for i in range(n))


def group_by_shape(rows: list[Row], pad: float | None) -> list[tuple[list[int], Row]]:
    """Stack rows into batches: same shapes together; padded to one batch when `pad` is set."""
    if pad is not None and rows:
        names = list(rows[0])
        target = {n: np.max([r[n].shape for r in rows], axis=0) for n in names}
        padded = {
            n: np.stack(
                [
                    np.pad(r[n], [(0, t - s) for s, t in zip(r[n].shape, target[n], strict=True)], constant_values=pad)
                    for r in rows
                ]
            )
            for n in names
        }
        return [(list(range(len(rows))), padded)]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(tuple((n, a.shape) for n, a in row.items()), []).append(i)
    return [(idx, {n: _stacked([rows[i][n] for i in idx]) for n in rows[idx[0]]}) for idx in groups.values()]


def _stacked(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays along a new batch axis; one array is viewed, not copied (a big tensor alone)."""
    return arrays[0][np.newaxis] if len(arrays) == 1 else np.stack(arrays)


def split_outputs(outputs: dict[str, np.ndarray], count: int) -> list[Row]:
    """Batched outputs back into one {output name: row} per item."""
    for name, arr in outputs.items():
        if arr.ndim == 0 or len(arr) != count:
            raise ValueError(f"output {name!r} has shape {list(arr.shape)}, not a batch of {count}")
    return [{name: arr[i] for name, arr in outputs.items()} for i in range(count)]


def encode_tensors(rows: list[Row]) -> TensorResponse:
    """Per-item outputs of one request as `{"outputs": ...}`, batch axis first."""
    if not rows:
        return TensorResponse(outputs=[])
    names = list(rows[0])
    if len(names) == 1:
        return TensorResponse(outputs=[r[names[0]].tolist() for r in rows])
    return TensorResponse(outputs={n: [r[n].tolist() for r in rows] for n in names})


class TensorRunner:
    """Hooks for a tensor model; subclasses load it and implement `run_batch`."""

    allowed_parameters: frozenset[str] = frozenset()  # none yet: a parameter sent is a mistake, a 422

    def __init__(self, inputs: list[TensorSpec], pad: float | None, example: Any = None) -> None:
        self.inputs = inputs
        self.pad = pad
        self.example = example

    def decode(self, request: TensorRequest) -> Many:
        unknown = set(request.parameters) - self.allowed_parameters
        if unknown:  # as the transformers runners answer
            raise InvalidInput(
                f"unknown parameters {sorted(unknown)}; allowed: {sorted(self.allowed_parameters)}", "parameters"
            )
        return decode_tensors(request, self.inputs)

    def run_batch(self, feeds: Row) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def per_item(self) -> bool:
        """True when the model has no dynamic batch axis: run each item on its own."""
        return False

    def predict(self, batch: list[Row]) -> list[Row]:
        results: list[Row | None] = [None] * len(batch)
        if self.per_item():
            groups = [([i], {n: a[None] for n, a in row.items()}) for i, row in enumerate(batch)]
        else:
            groups = group_by_shape(batch, self.pad)
        for idx, feeds in groups:
            for i, out in zip(idx, split_outputs(self.run_batch(feeds), len(idx)), strict=True):
                results[i] = out
        return [r for r in results if r is not None]

    def encode(self, output: list[Row]) -> TensorResponse:
        return encode_tensors(output)
