"""Built-in ONNX Runtime runner: inputs, dtypes and shapes introspected from the model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from servectl.runners.tensors import Row, TensorRunner, TensorSpec
from servectl.spec import Spec

log = logging.getLogger("servectl.worker")

ONNX_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}
_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _dims(shape: list[Any]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


def onnx_file_problem(path: Path) -> str | None:
    """Why `path` is not a loadable ONNX model, or None when it is (for `servectl validate`)."""
    try:
        import onnx
    except ImportError:
        return "the onnx backend needs its extra: pip install 'servectl[onnx]'"
    try:
        onnx.checker.check_model(onnx.load(str(path), load_external_data=False))
    except Exception as exc:
        return f"{path} is not an ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return None


class OnnxRunner(TensorRunner):
    """One InferenceSession per worker, on the worker's device when the provider exists."""

    platform = "onnxruntime_onnx"

    def __init__(self, spec: Spec) -> None:
        super().__init__([], spec.model.pad, spec.model.example)
        self.spec = spec

    def setup(self, device: str, spec: Spec) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if spec.model.onnx.intra_op_threads:
            options.intra_op_num_threads = spec.model.onnx.intra_op_threads
        level = _OPT_LEVELS[spec.model.onnx.graph_optimization]
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        wanted = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        available = ort.get_available_providers()
        providers = [p for p in wanted if p in available]
        self.session = ort.InferenceSession(str(spec.model_path()), options, providers=providers)
        used = self.session.get_providers()  # onnxruntime falls back silently: read what it took
        if device.startswith("cuda") and "CUDAExecutionProvider" not in used:
            log.warning("onnx: CUDA asked for but onnxruntime runs on %s (available: %s)", used, available)
        log.info("onnx: %s on %s", spec.model_path(), used[0])
        self.providers = used
        self.inputs = [
            TensorSpec(i.name, np.dtype(ONNX_DTYPES[i.type]), _dims(i.shape)) for i in self.session.get_inputs()
        ]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_specs = [
            TensorSpec(o.name, np.dtype(ONNX_DTYPES.get(o.type, np.float32)), _dims(o.shape))
            for o in self.session.get_outputs()
        ]
        first = [s.shape[0] if s.shape else 1 for s in self.inputs]
        self._per_item = any(d is not None for d in first)  # a fixed first axis: no batching
        if self.example is None:
            self.example = {"inputs": self._example_inputs()}

    def _example_inputs(self) -> Any:
        def sample(s: TensorSpec) -> Any:
            dims = [1] + [d if d is not None else 2 for d in (s.shape or (None, 1))[1:]]
            return np.zeros(dims, dtype=s.dtype if s.dtype != np.object_ else np.float32).tolist()

        if len(self.inputs) == 1:
            return sample(self.inputs[0])
        return {s.name: sample(s) for s in self.inputs}

    def per_item(self) -> bool:
        return self._per_item

    def run_batch(self, feeds: Row) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, (np.asarray(o) for o in outputs), strict=True))
