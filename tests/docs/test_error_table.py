"""Every error kind the code answers with is in `servectl.errors.ERRORS`, with that status:
the reference's table of errors cannot miss one."""

from __future__ import annotations

import ast
from pathlib import Path

import servectl
from servectl.errors import ERRORS

_MAKERS = {"Failure": (0, 1), "failed": (1, 2), "_refuse": (0, 2), "_write_refusal": (0, 2)}  # (status, kind) args


def _answered() -> set[tuple[int, str, str]]:
    """(status, kind, where) of every error made with a literal status and kind."""
    found: set[tuple[int, str, str]] = set()
    root = Path(servectl.__file__).parent
    for path in root.rglob("*.py"):
        if path.parts[len(root.parts)] == "cli":  # the commands answer no HTTP request
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in _MAKERS:
                continue
            at_status, at_kind = _MAKERS[name]
            if len(node.args) <= max(at_status, at_kind):
                continue
            status, kind = node.args[at_status], node.args[at_kind]
            if isinstance(status, ast.Constant) and isinstance(kind, ast.Constant) and isinstance(kind.value, str):
                found.add((status.value, kind.value, f"{path.relative_to(root)}:{node.lineno}"))
    return found


def test_the_scan_sees_the_errors_it_must() -> None:
    kinds = {kind for _, kind, _ in _answered()}
    assert {"timeout", "worker_crashed", "headers_too_large", "handler_error", "payload_too_large"} <= kinds


def test_every_error_the_code_answers_is_in_the_table() -> None:
    missing = [f"{where}: {status} {kind}" for status, kind, where in sorted(_answered()) if kind not in ERRORS]
    wrong = [
        f"{where}: {status} {kind} (the table says {ERRORS[kind].statuses})"
        for status, kind, where in sorted(_answered())
        if kind in ERRORS and status not in ERRORS[kind].statuses
    ]
    assert not missing, "add these to servectl/errors.py ERRORS:\n" + "\n".join(missing)
    assert not wrong, "\n".join(wrong)


def test_every_kind_is_described() -> None:
    for kind, info in ERRORS.items():
        assert info.statuses and info.when.strip(), kind
        assert all(400 <= s < 600 for s in info.statuses), kind
        assert info.retry == all(s in (429, 503) for s in info.statuses), kind
