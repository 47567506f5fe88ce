"""`model:`: what is served (a handler's own model, or a built-in runner's backend, path,
task and tensors)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from servectl.spec.base import Section


class OnnxOptions(Section):
    intra_op_threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads; null: its default.")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"


TASKS = ("feature-extraction", "text-classification", "text-generation")


class TensorDecl(Section):
    """One tensor of a model, as the spec declares it: where the model file cannot say it
    (TorchScript, a factory), V2 metadata, shape checks and `convert` read it from here."""

    name: str = Field(min_length=1)
    shape: list[int] | None = Field(
        None, description="Dimensions with the batch axis first; -1 for a dynamic axis; null: unknown."
    )
    dtype: Literal["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"] | None = Field(
        None, description="null: the model's dtype (inputs), float32 (outputs)."
    )

    @field_validator("shape")
    @classmethod
    def _dims(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(d < -1 or d == 0 for d in v)):
            raise ValueError("a shape is a non-empty list of sizes >= 1, or -1 for a dynamic axis")
        return v


def _tensor_decls(v: Any) -> Any:
    """`[a, b]` is shorthand for `[{name: a}, {name: b}]`."""
    if isinstance(v, list):
        return [{"name": item} if isinstance(item, str) else item for item in v]
    return v


class ModelSpec(Section):
    backend: Literal["python", "pytorch", "onnx", "transformers"] = Field(
        "python", description="`python`: the handler does the work; else a built-in runner."
    )
    path: str | None = Field(None, description="Model file or folder, relative to the spec file.")
    task: Literal["feature-extraction", "text-classification", "text-generation"] | None = Field(
        None, description="What a transformers model does."
    )
    factory: str | None = Field(None, description="pytorch: `module:function` returning an nn.Module.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    compile: bool = Field(False, description="pytorch: torch.compile the model (warns and skips where unsupported).")
    inputs: list[TensorDecl] | None = Field(
        None,
        description="A tensor model's inputs in call order: names, or {name, shape, dtype} (shape with the batch "
        "axis first, -1 dynamic).",
    )
    outputs: list[TensorDecl] | None = Field(
        None,
        description="pytorch: the outputs' names (in return order), shapes and dtypes; null: learned from "
        "model.example.",
    )
    pad: float | None = Field(None, description="Pad value for variable-length inputs; null: never pad.")
    max_length: int | None = Field(
        None,
        ge=1,
        description="transformers: the context in tokens (inputs are truncated to it, a generation's prompt plus "
        "max_tokens must fit); null: the model's own limit.",
    )
    normalize: bool = Field(True, description="feature-extraction: L2-normalise embeddings.")
    top_k: int = Field(1, ge=1, description="text-classification: labels returned per input.")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="text-generation: default tokens to generate.")
    onnx: OnnxOptions = OnnxOptions()
    example: Any = Field(None, description="A sample request: shown in /docs, used by `validate --smoke`.")

    _decls = field_validator("inputs", "outputs", mode="before")(lambda v: _tensor_decls(v))

    @field_validator("inputs", "outputs")
    @classmethod
    def _distinct(cls, v: list[TensorDecl] | None) -> list[TensorDecl] | None:
        names = [d.name for d in v or []]
        if len(set(names)) != len(names):
            raise ValueError("tensor names must be distinct")
        return v

    @model_validator(mode="after")
    def _backend_fields(self) -> ModelSpec:
        if self.backend == "onnx" and not self.path:
            raise ValueError("backend 'onnx' needs model.path (an .onnx file)")
        if self.backend == "pytorch" and not (self.path or self.factory):
            raise ValueError("backend 'pytorch' needs model.path (TorchScript or .pt2) or model.factory")
        if self.backend == "transformers" and not (self.path and self.task):
            raise ValueError(f"backend 'transformers' needs model.path (a local folder) and model.task, one of {TASKS}")
        if self.outputs and self.backend != "pytorch":
            raise ValueError("model.outputs is for backend 'pytorch' (ONNX models name their own outputs)")
        if self.task and self.backend != "transformers":
            raise ValueError("model.task is for backend 'transformers'")
        return self
