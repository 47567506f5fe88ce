"""What the exporters share: their result, their error, and the call into torch.onnx."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Tensors = dict[str, np.ndarray]
_EXTERNAL_BYTES = 1_500_000_000  # a protobuf holds 2 GB at most: bigger weights go to a side file


class ConvertError(Exception):
    """A model that cannot be converted, or converted wrong; the message says what to change."""


@dataclass
class Export:
    """An exported model and the evidence to check it: sample inputs by ONNX input name and the
    source model's outputs on them by ONNX output name."""

    exporter: str
    samples: list[Tensors]
    expected: list[Tensors]
    described: list[str]  # each sample, in words
    example: Any = None  # the written spec's model.example: a request the ONNX model takes
    pad: float | None = None  # the written spec's model.pad
    notes: list[str] = field(default_factory=list)
    usage: list[str] = field(default_factory=list)  # how to call the served model: the written spec's header


def first_line(exc: BaseException) -> str:
    """The first line of the root cause: torch.onnx wraps the reason in a page of next steps."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:400]


def export_module(
    model: Any, args: tuple[Any, ...], out: Path, inputs: list[str], outputs: list[str], axes: list[dict[int, str]]
) -> str:
    """Export `model` called with `args`, each input's `axes` dynamic (axis -> name; one name is
    one size). torch.export (the default exporter) where it captures the model; TorchScript
    modules, and modules it cannot capture, through the TorchScript-based exporter. Returns which."""
    import torch

    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    problem = ""
    if not isinstance(model, torch.jit.ScriptModule):
        dims: dict[str, Any] = {}
        shapes = tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in a.items()} for a in axes)
        try:
            torch.onnx.export(
                model,
                args,
                str(out),
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=shapes,
                dynamo=True,
                external_data=size > _EXTERNAL_BYTES,
                verbose=False,
            )
            return "torch.export"
        except Exception as exc:
            problem = first_line(exc)[:200]
    dynamic = {**dict(zip(inputs, axes, strict=True)), **{name: {0: "batch"} for name in outputs}}
    try:
        torch.onnx.export(
            model, args, str(out), input_names=inputs, output_names=outputs, dynamic_axes=dynamic, dynamo=False
        )
    except Exception as exc:
        tried = f"torch.export could not capture it ({problem}); " if problem else ""
        raise ConvertError(f"{tried}the TorchScript exporter failed: {first_line(exc)}") from None
    return "TorchScript exporter" + (f"; torch.export could not capture the module: {problem}" if problem else "")


def program_export(program: Any, args: tuple[Any, ...], out: Path, inputs: list[str], outputs: list[str]) -> str:
    """A torch.export program (.pt2) as it is: its dynamic axes are the ones it was exported with."""
    import torch

    size = sum(t.numel() * t.element_size() for t in program.state_dict.values())
    try:
        torch.onnx.export(
            program,
            args,
            str(out),
            input_names=inputs,
            output_names=outputs,
            dynamo=True,
            external_data=size > _EXTERNAL_BYTES,
            verbose=False,
        )
    except Exception as exc:
        raise ConvertError(f"the torch.export program did not export: {first_line(exc)}") from None
    return "torch.export, from the .pt2 program"
