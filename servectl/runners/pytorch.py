"""Built-in PyTorch runner: TorchScript, torch.export programs, or a factory plus weights."""

from __future__ import annotations

import contextlib
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from servectl.runners.tensors import Row, TensorRequest, TensorRunner, TensorSpec
from servectl.sdk import InvalidInput
from servectl.spec import Spec, TensorDecl

log = logging.getLogger("servectl.worker")

_SHAPE_WORDS = ("shape", "size", "dimension", "mat1 and mat2", "Expected", "expected", "Guard failed")
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.float32}


def model_format(path: Path) -> str:
    """`exported` (.pt2), `torchscript`, or `weights` (a state dict or safetensors), from the file."""
    if path.suffix == ".safetensors":
        return "weights"
    if path.suffix == ".pt2":
        return "exported"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "weights"
    raise ValueError(f"{path} is neither a TorchScript archive, a .pt2 program nor a weights file")


def _factory(ref: str, base_dir: Path) -> Any:
    from servectl.handler import load_handler_object

    module_ref, _, attr = ref.partition(":")
    module = load_handler_object(module_ref, base_dir)
    return getattr(module, attr or "build_model")


class PyTorchRunner(TensorRunner):
    """Batches rows into tensors on the worker's device and calls the module."""

    platform = "pytorch"

    def __init__(self, spec: Spec) -> None:
        dtype = np.dtype(_NUMPY_DTYPES[spec.model.dtype])
        declared = spec.model.inputs or [TensorDecl(name="input")]
        super().__init__([_tensor_spec(d, dtype) for d in declared], spec.model.pad, spec.model.example)
        self.spec = spec
        self.output_specs = [_tensor_spec(d, np.dtype(np.float32)) for d in spec.model.outputs or []]
        self.output_names = [s.name for s in self.output_specs]

    def setup(self, device: str, spec: Spec) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, spec.model.dtype)
        path = spec.model_path()
        model: Any
        if spec.model.factory:
            model = _factory(spec.model.factory, spec.base_dir)()
            if path is not None:
                if path.suffix == ".safetensors":
                    from safetensors.torch import load_file

                    state = load_file(str(path))
                else:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
        else:
            assert path is not None
            kind = model_format(path)
            if kind == "exported":
                program = torch.export.load(str(path))
                self.inputs = self._exported_inputs(program) or self.inputs
                model = program.module()
            elif kind == "torchscript":
                model = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            else:
                raise ValueError(f"{path} holds weights only: name the module with model.factory")
        if hasattr(model, "eval"):
            # exported programs' modules refuse eval(); they are already in inference form
            with contextlib.suppress(NotImplementedError, RuntimeError):
                model.eval()
        self.model = model.to(self.device, self.dtype) if hasattr(model, "to") else model
        if spec.model.compile:
            try:
                self.model = torch.compile(self.model)
            except Exception as exc:
                log.warning("model.compile: torch.compile unavailable here (%s); running eagerly", exc)
        self._describe_from_example()

    def _describe_from_example(self) -> None:
        """Inputs' shapes and the outputs' names, shapes and dtypes, learned by running
        `model.example` once, where neither the model (TorchScript records none) nor the spec
        says them: V2 metadata then tells clients what to send and what comes back."""
        known = all(s.shape is not None for s in self.inputs) and self.output_specs
        if known or not isinstance(self.example, dict) or "inputs" not in self.example:
            return
        try:
            rows = list(self.decode(TensorRequest.model_validate(self.example)))
            outputs = self.run_batch({n: np.stack([r[n] for r in rows]) for n in rows[0]})
        except Exception as exc:
            log.warning("model.example did not run (%s): shapes stay unknown in V2 metadata", exc)
            return
        self.inputs = [
            s if s.shape is not None else TensorSpec(s.name, s.dtype, (None, *rows[0][s.name].shape))
            for s in self.inputs
        ]
        if not self.output_specs:
            self.output_names = list(outputs)
            self.output_specs = [TensorSpec(n, a.dtype, (None, *a.shape[1:])) for n, a in outputs.items()]

    def _exported_inputs(self, program: Any) -> list[TensorSpec]:
        """Input names and shapes (None for dynamic axes) recorded in a torch.export program."""
        user_inputs = set(program.graph_signature.user_inputs)
        specs = []
        for node in program.graph.nodes:
            val = node.meta.get("val")
            if node.op != "placeholder" or node.name not in user_inputs or not hasattr(val, "shape"):
                continue
            shape = tuple(d if isinstance(d, int) else None for d in val.shape)
            dtype = self.inputs[0].dtype if val.dtype.is_floating_point else np.dtype(np.int64)
            specs.append(TensorSpec(node.name, dtype, shape))
        return specs

    def run_batch(self, feeds: Row) -> dict[str, np.ndarray]:
        torch = self.torch
        tensors = [
            torch.from_numpy(np.ascontiguousarray(feeds[s.name])).to(
                self.device, self.dtype if s.dtype.kind == "f" else None
            )
            for s in self.inputs
        ]
        try:
            with torch.inference_mode():
                out = self.model(*tensors)
        except (RuntimeError, AssertionError) as exc:  # shape errors are the client's; others ours
            text = str(exc)
            if "out of memory" in text or not any(w in text for w in _SHAPE_WORDS):
                raise
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            msg = lines[-1] if lines else type(exc).__name__  # TorchScript puts the cause last
            shapes = ", ".join(f"{s.name} {list(t.shape[1:])}" for s, t in zip(self.inputs, tensors, strict=True))
            raise InvalidInput(f"items shaped {shapes} do not fit the model: {msg[:300]}") from None
        if isinstance(out, dict):
            named = dict(out)
        else:
            tensors_out = [out] if isinstance(out, torch.Tensor) else list(out)
            names = self.output_names or (["output"] if len(tensors_out) == 1 else [])
            if len(names) != len(tensors_out):
                names = [f"output_{i}" for i in range(len(tensors_out))]
            named = dict(zip(names, tensors_out, strict=True))
        return {k: _to_numpy(v, torch) for k, v in named.items()}


def _tensor_spec(decl: TensorDecl, default: np.dtype[Any]) -> TensorSpec:
    """A declared tensor as the runner's spec: -1 axes are dynamic (None)."""
    shape = None if decl.shape is None else tuple(None if d == -1 else d for d in decl.shape)
    return TensorSpec(decl.name, np.dtype(decl.dtype) if decl.dtype else default, shape)


def _to_numpy(tensor: Any, torch: Any) -> np.ndarray:
    """Floats leave as float32 (half precision does not serialise), integers and bools as they are."""
    if tensor.dtype.is_floating_point:
        tensor = tensor.to(torch.float32)
    return tensor.detach().cpu().numpy()  # type: ignore[no-any-return]
