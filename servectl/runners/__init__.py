"""Built-in runners: serve a model from `model.backend` and `model.path` with no handler code.

Runners know nothing of processes, HTTP or protocols.

A runner is an ordinary handler object. When the spec also names a handler, that handler's
`decode` and `encode` wrap the runner (pre- and post-processing); the runner predicts.
"""

from __future__ import annotations

import importlib.util
import inspect
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError

from servectl.handler import Handler, HandlerError, load_handler_object
from servectl.sdk import InvalidInput
from servectl.spec import Spec

EXTRAS = {"pytorch": ("torch",), "onnx": ("onnxruntime",), "transformers": ("torch", "transformers")}


def missing_extra(backend: str) -> str | None:
    """The pip command to run when a backend's packages are not installed, else None."""
    missing = [m for m in EXTRAS.get(backend, ()) if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return f"backend {backend!r} needs {', '.join(missing)}: pip install 'servectl[{backend}]'"


class Overlay:
    """A runner with a user's pre-processing (`decode`) before it and post-processing
    (`encode`) after it: the user's decode turns a request into the runner's request shape,
    the user's encode gets the runner's response. The request and response types are the
    outermost hooks' (`request_model` / `response_model`, read by `Handler`)."""

    def __init__(self, runner: Any, user: Any) -> None:
        self.runner = runner
        for hook in ("setup", "batch", "predict", "unbatch", "generation_job"):
            if hasattr(runner, hook):
                setattr(self, hook, getattr(runner, hook))
        self._user_decode = getattr(user, "decode", None)
        self._user_encode = getattr(user, "encode", None)
        self._user_name = getattr(user, "__name__", "handler")
        runner_request = get_type_hints(runner.decode).get("request")
        self._runner_request = TypeAdapter(runner_request) if runner_request else None
        self.request_model = _first_hint(self._user_decode or runner.decode, "request")
        self.response_model = _first_hint(self._user_encode or runner.encode, "return")
        self.example = getattr(user, "example", None) or getattr(runner, "example", None)

    def decode(self, request: Any) -> Any:
        if self._user_decode is None:
            return self.runner.decode(request)
        pre = self._user_decode(request)
        try:
            return self.runner.decode(self._runner_request.validate_python(pre) if self._runner_request else pre)
        except ValidationError as exc:
            raise InvalidInput(f"{self._user_name}.decode returned {exc}") from None

    def encode(self, output: Any) -> Any:
        response = self.runner.encode(output)
        return self._user_encode(response) if self._user_encode else response


def _first_hint(fn: Any, name: str) -> Any:
    """The type hint of `fn`'s parameter `name` (its first parameter for "request"), or its return."""
    hints = get_type_hints(fn)
    if name == "return":
        return hints.get("return")
    params = [p for p in inspect.signature(fn).parameters if p in hints]
    return hints[params[0]] if params else None


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
        return Handler(runner, name, runner=runner)
    user = load_handler_object(spec.handler, spec.base_dir)
    return Handler(Overlay(runner, user), f"{spec.handler} around {name}", runner=runner)
