"""`servectl validate`: every check that can run without serving."""

from __future__ import annotations

from servectl.handler import Handler, HandlerError
from servectl.runtime.protocol import Result
from servectl.runtime.worker import BatchRunner
from servectl.spec import Spec, SpecIssue, issue_at


def check_spec(spec: Spec) -> tuple[list[SpecIssue], Handler | None]:
    """Problems beyond the schema: handler import and hooks, model path present."""
    issues: list[SpecIssue] = []
    handler: Handler | None = None
    if spec.handler is None:
        issues.append(issue_at(spec, "handler", "a handler is required for backend 'python'"))
    else:
        try:
            handler = Handler.load(spec.handler, spec.base_dir)
        except HandlerError as exc:
            issues.append(issue_at(spec, "handler", str(exc)))
    path = spec.model_path()
    if path is not None and not path.exists():
        issues.append(issue_at(spec, "model.path", f"{path} does not exist"))
    return issues, handler


def smoke(spec: Spec, handler: Handler) -> Result:
    """Run setup and the handler's example request through the worker's code path."""
    if handler.info().example is None:
        raise HandlerError(f"{handler.name} declares no `example` request to smoke-test with")
    import orjson

    handler.setup("cpu", spec)
    body = orjson.dumps(handler.info().example)
    return BatchRunner(handler).run([(0, "smoke", body)])[0]
