"""Built-in runners: serve a model from `model.backend` and `model.path` with no handler code.

A runner is an ordinary handler object. When the spec also names a handler, that handler's
`decode` and `encode` wrap the runner (pre- and post-processing); the runner predicts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError

from servectl.handler import Handler, HandlerError, HandlerInfo, load_handler_object
from servectl.sdk import InvalidInput
from servectl.spec import Spec

EXTRAS = {"pytorch": ("torch",), "onnx": ("onnxruntime",), "transformers": ("torch", "transformers")}


def missing_extra(backend: str) -> str | None:
    """The pip command to run when a backend's packages are not installed, else None."""
    missing = [m for m in EXTRAS.get(backend, ()) if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return f"backend {backend!r} needs {', '.join(missing)}: pip install 'servectl[{backend}]'"


class _Overlay:
    """A runner with a user's pre-processing (`decode`) before it and post-processing
    (`encode`) after it: the user's decode turns a request into the runner's request shape,
    the user's encode gets the runner's response."""

    def __init__(self, runner: Any, user: Any) -> None:
        self._runner = runner
        for hook in ("setup", "batch", "predict", "unbatch"):
            if hasattr(runner, hook):
                setattr(self, hook, getattr(runner, hook))
        runner_request = get_type_hints(runner.decode).get("request")
        adapter = TypeAdapter(runner_request) if runner_request else None
        user_decode, user_encode = getattr(user, "decode", None), getattr(user, "encode", None)

        def decode(request: Any) -> Any:
            if user_decode is None:
                return runner.decode(request)
            pre = user_decode(request)
            try:
                return runner.decode(adapter.validate_python(pre) if adapter else pre)
            except ValidationError as exc:
                raise InvalidInput(f"{getattr(user, '__name__', 'handler')}.decode returned {exc}") from None

        def encode(output: Any) -> Any:
            response = runner.encode(output)
            return user_encode(response) if user_encode else response

        decode.__annotations__ = dict(get_type_hints(user_decode or runner.decode))
        encode.__annotations__ = dict(get_type_hints(user_encode or runner.encode))
        self.decode, self.encode = decode, encode
        self._user_example = getattr(user, "example", None)

    @property
    def example(self) -> Any:
        return self._user_example or getattr(self._runner, "example", None)


def create_runner(spec: Spec) -> Any:
    backend = spec.model.backend
    problem = missing_extra(backend)
    if problem:
        raise HandlerError(problem)
    if backend == "pytorch":
        from servectl.runners.pytorch import PyTorchRunner

        return PyTorchRunner(spec)
    if backend == "onnx":
        from servectl.runners.onnx import OnnxRunner

        return OnnxRunner(spec)
    from servectl.runners.transformers import RUNNERS

    assert spec.model.task is not None
    return RUNNERS[spec.model.task](spec)


def build_handler(spec: Spec) -> Handler:
    """The handler a worker runs: the user's, a built-in runner, or the runner wrapped."""
    if spec.model.backend == "python":
        if spec.handler is None:
            raise HandlerError("model.backend 'python' needs a handler")
        return Handler.load(spec.handler, spec.base_dir)
    runner = create_runner(spec)
    name = f"{spec.model.backend}:{spec.model.task or spec.model.path or spec.model.factory}"
    if spec.handler is None:
        return Handler(runner, name)
    user = load_handler_object(spec.handler, spec.base_dir)
    return Handler(_Overlay(runner, user), f"{spec.handler} around {name}")


def build_adapters(spec: Spec, handler: Handler) -> dict[str, Handler]:
    """The protocol adapters of `api.kind` around a built handler, by route name ("v2",
    "chat", "completions", "embeddings"). They run no setup of their own: a worker builds
    them after the handler's setup, `client-gen` without any."""
    inner = getattr(handler.obj, "_runner", handler.obj)  # a built-in runner, under any user pre/post hooks
    adapters: dict[str, Any] = {}
    if spec.api.kind == "v2":
        from servectl.backends.v2 import V2Adapter  # numpy: only tensor deployments need it

        adapters["v2"] = V2Adapter(inner, spec.name)
    elif spec.api.kind == "openai":
        from servectl.backends import lm, openai

        if spec.model.backend == "python":  # the custom contract: complete / embed hooks
            model: Any = lm.HandlerLM(handler.obj, spec.model.max_new_tokens)
            generates, embeds = hasattr(handler.obj, "complete"), hasattr(handler.obj, "embed")
        else:
            model = lm.TransformersLM(inner)
            generates = spec.model.task == "text-generation"
            embeds = not generates
        if generates:
            adapters["chat"] = openai.ChatCompletions(model, spec.name)
            adapters["completions"] = openai.Completions(model, spec.name)
        if embeds:
            adapters["embeddings"] = openai.Embeddings(model, spec.name)
    return {name: Handler(adapter, f"{name}:{handler.name}") for name, adapter in adapters.items()}


def describe(handler: Handler, adapters: dict[str, Handler]) -> HandlerInfo:
    """What the API process is told: the handler's info with its adapters' by route, and
    the V2 model metadata once the runner is set up."""
    v2 = adapters.get("v2")
    metadata = v2.obj.metadata() if v2 is not None and v2.obj.runner.inputs else None
    routes = {name: adapter.info() for name, adapter in adapters.items()}
    return dataclasses.replace(handler.info(), routes=routes, metadata=metadata)
