"""`servectl validate`: every check that can run without serving."""

from __future__ import annotations

import importlib.util

import orjson

from servectl.handler import Handler, HandlerError
from servectl.outcome import Answer
from servectl.runners import build_handler, missing_extra
from servectl.spec import DeploymentSpec, Spec, SpecIssue, issue_at
from servectl.worker.batch import BatchRunner
from servectl.worker.messages import Request


def _model_file_problem(spec: Spec) -> str | None:
    path = spec.model_path()
    backend = spec.model.backend
    if path is None:
        return None
    if not path.exists():
        return f"{path} does not exist"
    if backend == "onnx":
        from servectl.runners.onnx import onnx_file_problem

        return onnx_file_problem(path)
    if backend == "pytorch" and not spec.model.factory:
        from servectl.runners.pytorch import model_format

        try:
            kind = model_format(path)
        except ValueError as exc:
            return str(exc)
        if kind == "weights":
            return f"{path} holds weights only: name the module that takes them with model.factory"
    if backend == "transformers" and not (path.is_dir() and (path / "config.json").exists()):
        return f"{path} is not a transformers model folder (no config.json): save one with save_pretrained"
    return None


def check_spec(spec: Spec) -> tuple[list[SpecIssue], Handler | None]:
    """Problems beyond the schema: extras installed, model file, handler import and hooks."""
    issues: list[SpecIssue] = []
    extra = missing_extra(spec.model.backend)
    if extra:
        issues.append(issue_at(spec, "model.backend", extra))
    problem = _model_file_problem(spec)
    if problem:
        issues.append(issue_at(spec, "model.path", problem))
    if issues:
        return issues, None
    try:
        handler = build_handler(spec)
    except HandlerError as exc:
        field = "handler" if spec.handler else "model"
        return [*issues, issue_at(spec, field, str(exc))], None
    return issues, handler


def check_deployment(deployment: DeploymentSpec) -> tuple[list[SpecIssue], list[Handler | None]]:
    """check_spec for every model: each problem located and named within its entry (`models.1.model.path`)."""
    issues: list[SpecIssue] = []
    handlers: list[Handler | None] = []
    for spec in deployment.models:
        found, handler = check_spec(spec)
        issues += found
        handlers.append(handler)
    if deployment.runtime.kind == "ray" and importlib.util.find_spec("ray") is None:
        message = "runtime.kind 'ray' needs Ray: pip install 'servectl[ray]'"
        issues.append(issue_at(deployment.models[0], "runtime.kind", message))
    return issues, handlers


def smoke(spec: Spec, handler: Handler) -> Answer:
    """Run setup and the handler's example request through the worker's code path."""
    handler.setup("cpu", spec)
    example = handler.info().example
    if example is None:
        raise HandlerError(f"{handler.name} declares no `example` request to smoke-test with")
    body = orjson.dumps(example)
    return BatchRunner(handler, spec.batching.max_batch_size).run([Request(0, "smoke", body, "predict")])[0].outcome
