"""Built-in runners: serve a model from `model.backend` and `model.path` with no handler code.

Runners know nothing of processes, HTTP or protocols.

A runner is an ordinary handler object. When the spec also names a handler, that handler's
`decode` and `encode` wrap the runner (pre- and post-processing); the runner predicts.
"""

from __future__ import annotations

import importlib.util
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
