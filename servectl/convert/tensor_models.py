"""PyTorch models (TorchScript, a torch.export `.pt2`, a factory plus weights) to ONNX.

The model is loaded by the PyTorch runner itself, so what is exported is what `backend:
pytorch` serves: the same file formats, input names, dtypes, and shapes learned from
`model.example` where the model records none.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from servectl.convert.common import ConvertError, Export, Tensors, export_module, first_line, program_export
from servectl.runners.tensors import TensorRequest, TensorSpec, group_by_shape
from servectl.spec import Spec

_OTHER_AXIS = {2: 3, 3: 5}  # random samples: batch size -> the size of their other dynamic axes


def export_tensor_model(spec: Spec, out: Path) -> Export:
    """Load `spec`'s model as its runner does (on the CPU, in float32), run the samples through
    it, and export it with the batch axis (and the axes declared -1) dynamic."""
    import torch

    from servectl.runners.pytorch import PyTorchRunner, model_format

    source = spec.model_copy(update={"model": spec.model.model_copy(update={"dtype": "float32", "compile": False})})
    runner = PyTorchRunner(source)
    try:
        runner.setup("cpu", source)
    except Exception as exc:
        raise ConvertError(f"the model did not load: {first_line(exc)}") from None
    if any(s.shape is None for s in runner.inputs):
        raise ConvertError(shapes_needed(runner.inputs))
    samples, described = _samples(runner, spec)
    expected = []
    for sample in samples:
        try:
            expected.append(runner.run_batch(sample))
        except Exception as exc:
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in sample.items())
            raise ConvertError(f"the model failed on the sample {shapes}: {first_line(exc)}") from None
    names, outputs = [s.name for s in runner.inputs], list(expected[0])
    args = tuple(
        torch.from_numpy(np.ascontiguousarray(a)).to(torch.float32 if a.dtype.kind == "f" else None)
        for a in (samples[-1][n] for n in names)
    )
    notes = []
    if spec.model.dtype != "float32":
        notes.append(f"exported in float32: model.dtype {spec.model.dtype} is a setting of the PyTorch runner")
    path = spec.model_path()
    if path is not None and not spec.model.factory and model_format(path) == "exported":
        exporter = program_export(torch.export.load(str(path)), args, out, names, outputs)
        fixed = [f"{s.name} ({s.shape[0]})" for s in runner.inputs if s.shape and s.shape[0] is not None]
        if fixed:
            notes.append(
                "the .pt2 program fixes the batch axis of " + ", ".join(fixed) + ": so does the ONNX model; export "
                "the program with a dynamic torch.export.Dim on axis 0 to batch requests"
            )
    else:
        exporter = export_module(runner.model, args, out, names, outputs, [dynamic_axes(s) for s in runner.inputs])
    return Export(exporter, samples, expected, described, example=spec.model.example, pad=spec.model.pad, notes=notes)


def dynamic_axes(spec: TensorSpec) -> dict[int, str]:
    """Axis 0 (the batch) and every axis the spec leaves dynamic; named for torch.export.Dim."""
    stem = re.sub(r"\W", "_", spec.name)
    return {0: "batch", **{i: f"{stem}_dim{i}" for i, d in enumerate(spec.shape or ()) if i and d is None}}


def _samples(runner: Any, spec: Spec) -> tuple[list[Tensors], list[str]]:
    """`model.example` as the runner decodes it, and its items repeated (another batch size);
    without an example, random inputs of the declared shapes at two batch sizes."""
    batch_fixed = any(s.shape and s.shape[0] is not None for s in runner.inputs)
    example = spec.model.example
    if isinstance(example, dict) and "inputs" in example:
        try:
            rows = list(runner.decode(TensorRequest.model_validate(example)))
        except Exception as exc:
            raise ConvertError(f"model.example does not fit the model: {first_line(exc)}") from None
        if rows:
            batches = [feeds for _, feeds in group_by_shape(rows, spec.model.pad)]
            described = [f"model.example ({_items(len(next(iter(b.values()))))})" for b in batches]
            if not batch_fixed:
                n = len(next(iter(batches[0].values())))
                batches.append({k: v[np.arange(2 * n + 1) % n] for k, v in batches[0].items()})
                described.append(f"model.example's items repeated to {2 * n + 1}")
            return batches, described
    rng = np.random.default_rng(0)
    sizes = [0] if batch_fixed else [2, 3]
    samples = [{s.name: _random(s, n, rng) for s in runner.inputs} for n in sizes]
    ints = any(s.dtype.kind in "iu" for s in runner.inputs)
    words = "random inputs" + (" (integers in [0, 8))" if ints else "")
    return samples, [f"{words}, {_items(len(next(iter(s.values()))))}" for s in samples]


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def _random(spec: TensorSpec, batch: int, rng: np.random.Generator) -> np.ndarray:
    assert spec.shape is not None
    other = _OTHER_AXIS.get(batch, 4)
    dims = [d if d is not None else (batch if i == 0 else other) for i, d in enumerate(spec.shape)]
    if spec.dtype.kind == "f":
        return rng.standard_normal(dims).astype(spec.dtype)
    if spec.dtype.kind == "b":
        return rng.random(dims) < 0.5
    return rng.integers(0, 8, size=dims).astype(spec.dtype)


def shapes_needed(inputs: list[TensorSpec]) -> str:
    """The error for a model whose input shapes nothing says, with the YAML that says them."""
    unknown = ", ".join(repr(s.name) for s in inputs if s.shape is None)
    lines = [
        f"the shape of input {unknown} is unknown: a TorchScript or factory module records none, and there is no "
        "model.example to learn it from. Declare model.inputs in the spec (the batch axis first, -1 for a dynamic "
        "axis; your model's sizes instead of 4), e.g.:",
        "  model:",
        "    inputs:",
        *(f"      - {{name: {s.name}, shape: [-1, 4], dtype: {s.dtype}}}" for s in inputs),
        "or give model.example, a request the model takes: {inputs: [[0.1, 0.2, 0.3, 0.4]]}",
    ]
    return "\n".join(lines)
