"""The Open Inference Protocol (V2, as in Triton and KServe) around a tensor runner.

Requests carry typed tensors (`name`, `shape`, `datatype`, row-major `data`, flat or
nested); axis 0 is the batch axis, so requests from many clients batch together like any
other. Metadata (names, datatypes, shapes with -1 for dynamic axes) comes from the model.

The binary tensor data extension (tritonclient's and KServe's): a body of JSON (its length
in `Inference-Header-Content-Length`) then raw tensors, each input's size in its
`parameters.binary_data_size`, little-endian, BYTES as 4-byte length prefixes; arrays are
read in place from the message's bytes. Outputs come back binary when the request asks
(`parameters.binary_data_output`, or an output's `parameters.binary_data`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from servectl.runners.tensors import Row, TensorRunner, TensorSpec, check_shape
from servectl.sdk import InvalidInput, Many
from servectl.worker.codec import Framed, parse

V2_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
_NAMES = {np.dtype(v): k for k, v in V2_DTYPES.items()}


def v2_datatype(dtype: np.dtype[Any]) -> str:
    return _NAMES.get(np.dtype(dtype), "BYTES" if np.dtype(dtype).kind in "OUS" else str(dtype).upper())


class TensorIn(BaseModel):
    name: str
    shape: list[int] = Field(description="Row-major shape; axis 0 is the batch axis.")
    datatype: str
    data: list[Any] = Field(
        default_factory=list, description="Row-major values, flat or nested (absent when the tensor is binary)."
    )
    parameters: dict[str, Any] = Field(default_factory=dict)
    raw: SkipJsonSchema[Any] = Field(None, exclude=True)  # binary data, set by parse_body


class OutputWanted(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[TensorIn]
    outputs: list[OutputWanted] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str = "1"
    id: str | None = None
    outputs: list[TensorOut]


class Context(tuple[str | None, list[str] | None, frozenset[str]]):
    """A request's id, the outputs it asked for (None: all) and those it wants binary
    (`*`: all)."""


class V2Adapter:
    """Handler hooks that speak V2 to a tensor runner that has run its setup."""

    response_model = InferResponse  # documented answer (a binary one is framed, not JSON alone)

    def __init__(self, runner: TensorRunner, model_name: str) -> None:
        self.runner = runner
        self.model_name = model_name
        self.output_names: list[str] = list(getattr(runner, "output_names", []))

    def _array(self, tensor: TensorIn) -> np.ndarray:
        spec = next((s for s in self.runner.inputs if s.name == tensor.name), None)
        if spec is None:
            known = ", ".join(s.name for s in self.runner.inputs)
            raise InvalidInput(f"unknown input {tensor.name!r}; the model takes {known}", "inputs")
        if any(d < 0 for d in tensor.shape):
            msg = (
                f"input {tensor.name!r} has shape {tensor.shape}: a request's dimensions are its data's, never negative"
            )
            raise InvalidInput(msg, "inputs", status=400)
        dtype = V2_DTYPES.get(tensor.datatype)
        if dtype is None:
            raise InvalidInput(f"datatype {tensor.datatype!r} is not one of {', '.join(V2_DTYPES)}", "inputs")
        if np.dtype(dtype) != spec.dtype:
            raise InvalidInput(
                f"input {tensor.name!r} is {v2_datatype(spec.dtype)} in the model, not {tensor.datatype}", "inputs"
            )
        try:
            if tensor.raw is not None:
                arr = _from_binary(tensor.raw, tensor.datatype, dtype).reshape(tensor.shape)
            else:
                with np.errstate(over="ignore"):  # an overflow is answered below, not warned about
                    arr = np.asarray(tensor.data, dtype=dtype).reshape(tensor.shape)
        except OverflowError as exc:  # a value beyond an integer type, or 1e999 (infinity) in one
            msg = f"input {tensor.name!r}: a value is out of range for {tensor.datatype}: {exc}"
            raise InvalidInput(msg, "inputs", status=400) from None
        except (ValueError, TypeError) as exc:
            raise InvalidInput(
                f"input {tensor.name!r}: data does not fit shape {tensor.shape}: {exc}", "inputs"
            ) from None
        if tensor.raw is None and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            # JSON has no infinity: a value beyond the datatype's range (1e39 in FP32, 1e999) became one
            msg = f"input {tensor.name!r}: a value is out of range for {tensor.datatype}"
            raise InvalidInput(msg, "inputs", status=400)
        check_shape(tensor.name, arr, spec)
        return arr

    def decode(self, request: InferRequest) -> Many:
        names = [t.name for t in request.inputs]
        if len(set(names)) != len(names):
            twice = next(n for i, n in enumerate(names) if n in names[:i])
            raise InvalidInput(f"input {twice!r} is given more than once", "inputs", status=400)
        arrays = {t.name: self._array(t) for t in request.inputs}
        missing = sorted({s.name for s in self.runner.inputs} - set(arrays))
        if missing:
            raise InvalidInput(f"missing inputs {missing}", "inputs")
        wanted = [o.name for o in request.outputs] if request.outputs else None
        unknown = sorted(set(wanted or []) - set(self.output_names)) if self.output_names else []
        if unknown:
            raise InvalidInput(f"unknown outputs {unknown}; the model has {self.output_names}", "outputs")
        counts = {len(a) for a in arrays.values()}
        if len(counts) != 1:
            raise InvalidInput(f"inputs disagree on axis 0: {sorted(counts)}", "inputs")
        binary = {o.name for o in request.outputs or [] if o.parameters.get("binary_data")}
        if request.parameters.get("binary_data_output"):
            binary.add("*")
        context = Context((request.id, wanted, frozenset(binary)))
        return Many(({n: a[i] for n, a in arrays.items()}, context) for i in range(counts.pop()))

    def predict(self, batch: list[tuple[Row, Context]]) -> list[tuple[Row, Context]]:
        rows = self.runner.predict([row for row, _ in batch])
        return list(zip(rows, (ctx for _, ctx in batch), strict=True))

    def encode(self, outputs: list[tuple[Row, Context]]) -> dict[str, Any] | Framed:
        """The answer (an InferResponse), `id` only when the request had one (the protocol
        echoes an id, never sends a null one)."""
        if not outputs:
            return {"model_name": self.model_name, "model_version": "1", "outputs": []}
        request_id, wanted, binary = outputs[0][1]
        names = wanted or list(outputs[0][0])
        tensors: list[Any] = []
        parts: list[bytes] = []
        for name in names:
            stacked = np.stack([row[name] for row, _ in outputs])
            head = {"name": name, "shape": list(stacked.shape), "datatype": v2_datatype(stacked.dtype)}
            if name in binary or "*" in binary:
                part = _to_binary(stacked)
                parts.append(part)
                tensors.append({**head, "parameters": {"binary_data_size": len(part)}})
                continue
            if stacked.dtype.kind == "f" and not np.isfinite(stacked).all():
                raise ValueError(f"non-finite output {name!r}: it holds a NaN or infinity, which JSON has no form for")
            data = stacked.ravel().tolist()
            if stacked.dtype.kind in "OSU":
                data = [v.decode() if isinstance(v, bytes) else v for v in data]
            tensors.append({**head, "data": data})
        answer: dict[str, Any] = {"model_name": self.model_name, "model_version": "1"}
        if request_id is not None:
            answer["id"] = request_id
        answer["outputs"] = tensors
        return Framed(answer, parts) if parts else answer

    def parse_body(self, body: bytes, json_length: int | None) -> Any:
        """The request's JSON, with each binary input's bytes attached (`raw`, a view into the
        body: no copy)."""
        if json_length is None:
            return parse(body)
        head = parse(body[:json_length])
        binary = memoryview(body)[json_length:]
        at = 0
        for tensor in head.get("inputs", []) if isinstance(head, dict) else []:
            size = (tensor.get("parameters") or {}).get("binary_data_size") if isinstance(tensor, dict) else None
            if size is None:
                continue
            if not isinstance(size, int) or size < 0 or at + size > len(binary):
                msg = f"input {tensor.get('name')!r}: binary_data_size {size!r} runs past the body's binary part"
                raise InvalidInput(msg, "inputs", status=400)
            tensor["raw"] = binary[at : at + size]
            at += size
        if at != len(binary):
            msg = f"the body has {len(binary) - at} binary bytes that no input's binary_data_size claims"
            raise InvalidInput(msg, "inputs", status=400)
        return head

    @property
    def example(self) -> dict[str, Any] | None:
        """One zero-filled row per input (None before the runner's setup knows its inputs)."""
        if not self.runner.inputs:
            return None
        tensors = []
        for s in self.runner.inputs:
            shape = [1] + [d or 1 for d in (s.shape or (None, 1))[1:]]
            zero: Any = "" if s.dtype.kind in "OSU" else (False if s.dtype.kind == "b" else 0)
            size = int(np.prod(shape))
            tensors.append({"name": s.name, "shape": shape, "datatype": v2_datatype(s.dtype), "data": [zero] * size})
        return {"inputs": tensors}

    def metadata(self) -> dict[str, Any] | None:
        """`GET /v2/models/{name}`'s body (None before the runner's setup knows its inputs)."""
        if not self.runner.inputs:
            return None
        outputs = getattr(self.runner, "output_specs", [])
        return {
            "name": self.model_name,
            "versions": ["1"],
            "platform": getattr(self.runner, "platform", "servectl"),
            "inputs": [_describe(s) for s in self.runner.inputs],
            "outputs": [_describe(s) for s in outputs],
        }


def _from_binary(raw: memoryview, datatype: str, dtype: Any) -> np.ndarray:
    """A binary tensor's values: little-endian fixed-size items, or BYTES elements each
    after its 4-byte little-endian length (text when it is UTF-8, as JSON would give it)."""
    if datatype != "BYTES":
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise ValueError("a BYTES element's 4-byte length is cut short")
        n = int.from_bytes(raw[at : at + 4], "little")
        if at + 4 + n > len(raw):
            raise ValueError("a BYTES element runs past its tensor's binary_data_size")
        items.append(_text(bytes(raw[at + 4 : at + 4 + n])))
        at += 4 + n
    return np.array(items, dtype=np.object_)


def _text(data: bytes) -> str | bytes:
    """A BYTES element as the JSON path has it (text), or as bytes when it is not UTF-8."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return data


def _to_binary(array: np.ndarray) -> bytes:
    if array.dtype.kind not in "OSU":
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    out = []
    for value in array.ravel().tolist():
        data = value if isinstance(value, bytes) else str(value).encode()
        out.append(len(data).to_bytes(4, "little") + data)
    return b"".join(out)


def _describe(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": v2_datatype(spec.dtype),
        "shape": [-1 if d is None else d for d in spec.shape or (None,)],
    }
