"""`servectl convert`: a spec's PyTorch or transformers model exported to ONNX, then checked.

The export runs the same sample inputs through the source model (loaded the way its runner
loads it) and through onnxruntime, and reports the largest absolute difference: a model that
exports without error can still compute something else (a traced branch, an op the exporter
maps differently), and only running both says so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from servectl.convert.common import ConvertError, Export, first_line
from servectl.spec import Spec

__all__ = ["Conversion", "ConvertError", "convert"]

_NEEDS = ("torch", "onnx", "onnxscript", "onnxruntime")
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "transformers", "onnxscript")


@dataclass
class Conversion:
    """What `convert` did, for the command line to print."""

    out: Path
    exporter: str
    inputs: list[str]
    outputs: list[str]
    samples: list[str]
    max_diff: float
    worst: str  # the output where the largest difference is
    atol: float
    notes: list[str] = field(default_factory=list)
    spec_path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.max_diff <= self.atol


def convert(spec: Spec, out: Path, atol: float = 1e-4, write_spec: Path | None = None) -> Conversion:
    """Export `spec`'s model to ONNX at `out`, compare it with the source model on sample inputs,
    and (when the difference is within `atol`) write a `backend: onnx` spec to `write_spec`."""
    backend = spec.model.backend
    if backend not in ("pytorch", "transformers"):
        raise ConvertError(
            f"model.backend {backend!r}: convert exports PyTorch models (backend pytorch) and transformers models "
            "(backend transformers)" + ("; this one is ONNX already" if backend == "onnx" else "")
        )
    needs = [*_NEEDS, *(["transformers"] if backend == "transformers" else [])]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        raise ConvertError(f"convert needs {', '.join(missing)}: pip install 'servectl[{backend},onnx-cpu]' onnxscript")
    out.parent.mkdir(parents=True, exist_ok=True)
    with quiet():
        if backend == "pytorch":
            from servectl.convert.tensor_models import export_tensor_model

            export = export_tensor_model(spec, out)
        else:
            from servectl.convert.text_models import export_text_model

            export = export_text_model(spec, out)
    conversion = _check(export, out, atol)
    if conversion.ok and write_spec is not None:
        from servectl.convert.spec_out import write_onnx_spec

        conversion.notes += write_onnx_spec(spec, out, write_spec, export, conversion.inputs)
        conversion.spec_path = write_spec
    return conversion


def _check(export: Export, out: Path, atol: float) -> Conversion:
    """Run every sample through onnxruntime and measure it against the source model's outputs."""
    import onnxruntime as ort

    from servectl.runners.onnx import ONNX_DTYPES

    try:
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ConvertError(f"onnxruntime cannot load the exported {out}: {first_line(exc)}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = [o.name for o in outputs]
    worst, largest = names[0] if names else "", 0.0
    for sample, expected in zip(export.samples, export.expected, strict=True):
        feeds = {i.name: np.asarray(sample[i.name], dtype=ONNX_DTYPES.get(i.type, np.float32)) for i in inputs}
        try:
            got = dict(zip(names, session.run(names, feeds), strict=True))
        except Exception as exc:
            shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
            raise ConvertError(f"onnxruntime failed on the sample {shapes}: {first_line(exc)}") from None
        if set(got) != set(expected):
            raise ConvertError(f"the ONNX model's outputs {sorted(got)} are not the source model's {sorted(expected)}")
        for name, want in expected.items():
            diff = largest_difference(want, np.asarray(got[name]), name)
            if diff > largest:
                worst, largest = name, diff
    return Conversion(
        out=out,
        exporter=export.exporter,
        inputs=[_describe(i) for i in inputs],
        outputs=[_describe(o) for o in outputs],
        samples=export.described,
        max_diff=largest,
        worst=worst,
        atol=atol,
        notes=list(export.notes),
    )


def largest_difference(want: np.ndarray, got: np.ndarray, name: str = "output") -> float:
    """max |want - got|; NaN where both are NaN counts as equal, where one is as infinity."""
    if want.shape != got.shape:
        raise ConvertError(
            f"output {name!r} is shaped {list(got.shape)} by onnxruntime, {list(want.shape)} by the source model"
        )
    if want.size == 0:
        return 0.0
    a, b = want.astype(np.float64), got.astype(np.float64)
    diff = np.abs(a - b)
    diff[np.isnan(a) & np.isnan(b)] = 0.0
    diff[np.isnan(diff)] = np.inf
    return float(diff.max())


def _describe(value: Any) -> str:
    """An ONNX input or output as servectl's runners describe tensors: `x [-1, 4] float32`."""
    from servectl.runners.onnx import ONNX_DTYPES

    dims = ", ".join(str(d) if isinstance(d, int) else "-1" for d in value.shape)
    dtype = np.dtype(ONNX_DTYPES[value.type]).name if value.type in ONNX_DTYPES else value.type
    return f"{value.name} [{dims}] {dtype}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters' progress lines, warnings and load reports kept off the terminal: the
    command says what matters in its own report (a failure still raises with its cause)."""
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
