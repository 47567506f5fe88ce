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
    """`model.onnx:`: onnxruntime's session options for `backend: onnx` (threads per worker, how far
    the graph is optimised)."""

    intra_op_threads: int | None = Field(
        None, ge=1, description="onnxruntime intra-op threads per worker; null: onnxruntime's default."
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime's graph optimisation level: `disable`, `basic`, `extended` or `all`."
    )


TASKS = ("feature-extraction", "text-classification", "text-generation")


class TensorDecl(Section):
    """One tensor of a model, as the spec declares it: where the model file cannot say it
    (TorchScript, a factory), V2 metadata, shape checks and `convert` read it from here."""

    name: str = Field(
        min_length=1,
        description="The tensor's name (not empty; distinct within model.inputs or model.outputs): what V2 "
        "requests, answers and metadata call it.",
    )
    shape: list[int] | None = Field(
        None,
        description="Dimensions with the batch axis first, each a size >= 1 or -1 for a dynamic axis (not empty); "
        "null: unknown.",
    )
    dtype: Literal["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"] | None = Field(
        None,
        description="`float32`, `float16`, `float64`, `int64`, `int32`, `int16`, `int8`, `uint8` or `bool`; null: "
        "model.dtype (inputs), `float32` (outputs).",
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
    """`model:`: what is served: with `backend: python` the handler's own model; else a built-in
    runner's backend, model path, task and tensors, served with no handler code."""

    backend: Literal["python", "pytorch", "onnx", "transformers"] = Field(
        "python",
        description="`python`: your handler does the work. `pytorch`, `onnx`, `transformers`: a built-in runner "
        "serves model.path with no handler code (see the guide).",
    )
    path: str | None = Field(
        None,
        description="Model file or folder, relative to the spec file (`${pkg:NAME,sub,dir}` resolves a folder "
        "inside an installed package). `validate` checks that it exists and has the right format. Needed by "
        "`onnx` (an .onnx file), `transformers` (a local folder) and `pytorch` (TorchScript or .pt2) unless "
        "model.factory is given.",
    )
    task: Literal["feature-extraction", "text-classification", "text-generation"] | None = Field(
        None,
        description="transformers (and only there; required): what the model does: `feature-extraction`, "
        "`text-classification` or `text-generation`.",
    )
    factory: str | None = Field(
        None,
        description="pytorch: `module:function` returning an `nn.Module`; model.path is then its weights (`.pt` "
        "state dict or `.safetensors`).",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32",
        description="pytorch / transformers: the weights' and inputs' dtype: `float32`, `float16` or `bfloat16`.",
    )
    compile: bool = Field(
        False, description="pytorch: `torch.compile` the module (warns and runs eagerly where unsupported)."
    )
    inputs: list[TensorDecl] | None = Field(
        None,
        description="pytorch: the module's inputs in call order, as names or `{name, shape, dtype}` (shape with "
        "the batch axis first, `-1` dynamic; dtype `float32`... `int64`, `bool`); default one input, `input`; "
        "`.pt2` programs report their own. Shapes are checked (422 naming the expected shape), shown in V2 "
        "metadata and used by `servectl convert`. Names must be distinct.",
    )
    outputs: list[TensorDecl] | None = Field(
        None,
        description="pytorch only: the outputs' names in return order, with shapes and dtypes, as model.inputs "
        "(names distinct); null: learned by running model.example once at setup (a single output is `output`). "
        "ONNX models name their own outputs.",
    )
    pad: float | None = Field(
        None,
        description="Tensor models: pad variable-length items to one batch with this value; null: never pad "
        "(items of different shapes run as separate calls).",
    )
    max_length: int | None = Field(
        None,
        ge=1,
        description="transformers: the context in tokens; null: the model's own (`max_position_embeddings`, "
        "`n_positions`, ...). Inputs are truncated to it (padding is to the longest text in the batch); a "
        "generation's prompt plus `max_tokens` must fit (else 400 `context_length_exceeded`; without "
        "`max_tokens` the completion gets the room left).",
    )
    normalize: bool = Field(
        True, description="feature-extraction: L2-normalise embeddings (request parameter `normalize` overrides)."
    )
    top_k: int = Field(
        1, ge=1, description="text-classification: labels returned per text (request parameter `top_k` overrides)."
    )
    max_new_tokens: int = Field(
        32,
        ge=1,
        le=4096,
        description="text-generation: default tokens to generate (request parameter `max_new_tokens` overrides).",
    )
    tool_parser: Literal["hermes", "llama3_json"] = Field(
        "hermes",
        description="api.kind openai: how tool calls look in the model's text, read back into `tool_calls` "
        "(and forced by a grammar under tool_choice `required` or a named function): `hermes` (Hermes, Qwen: "
        '`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`) or `llama3_json` (Llama 3: '
        '`{"name": ..., "parameters": {...}}`, several separated by `; `).',
    )
    onnx: OnnxOptions = OnnxOptions()
    example: Any = Field(
        None,
        description="A sample request: shown in `/docs`, used by `validate --smoke` (and, for pytorch without "
        "model.outputs, run once at setup to learn the outputs).",
    )

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
