"""`servectl validate`: every check that can run without serving."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from servectl.handler import Handler, HandlerError, load_handler_object
from servectl.runners import build_handler, missing_extra
from servectl.spec import DeploymentSpec, Path_, Spec, SpecError, SpecIssue, issue_at, read_spec_file


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


def handler_issues(paths: Sequence[Path]) -> list[SpecIssue]:
    """The handlers of spec files that failed validation, imported anyway: their problems are
    listed with the schema's, not after the schema is fixed. A `handler` written with an
    interpolation (`${...}`) or not as text is left to the schema."""
    issues: list[SpecIssue] = []
    for path in paths:
        try:
            file = read_spec_file(path)
        except SpecError:
            continue  # unreadable: already reported
        entries = file.raw.get("models")
        located: list[tuple[Path_, object]] = [((), file.raw)]
        if entries is not None:
            located = [(("models", j), e) for j, e in enumerate(entries if isinstance(entries, list) else [])]
        for at, entry in located:
            ref = entry.get("handler") if isinstance(entry, dict) else None
            if not isinstance(ref, str) or "${" in ref:
                continue
            model = entry.get("model") if isinstance(entry, dict) else None
            wraps_runner = isinstance(model, dict) and model.get("backend", "python") != "python"
            try:
                if wraps_runner:  # hooks around a built-in runner: Handler checks them with the runner
                    load_handler_object(ref, file.path.resolve().parent)
                else:
                    Handler.load(ref, file.path.resolve().parent)
            except HandlerError as exc:
                issues.append(file.locator().issue((*at, "handler"), str(exc)))
    return issues
