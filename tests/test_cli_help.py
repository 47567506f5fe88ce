"""The CLI reference is generated from Typer's help, and the metrics reference from the
registry: every command, argument and option has a help text, and the help says what the
code does (defaults included)."""

from __future__ import annotations

from typing import Any

import typer

from servectl.cli.main import app
from servectl.metrics import DROP_REASONS, Metrics


def commands(command: Any, path: str = "servectl") -> list[tuple[str, Any]]:
    """Every command under `command` (Typer's own click: duck-typed), by its full name."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += commands(sub, f"{path} {name}")
    return found


def test_every_command_argument_and_option_has_help() -> None:
    missing = []
    every = commands(typer.main.get_command(app))
    assert {"servectl export k8s", "servectl export ray", "servectl convert"} <= dict(every).keys()
    for path, command in every:
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path} {param.opts[0] if param.opts else param.name}")
    assert missing == []


def option(path: str, name: str) -> Any:
    by_path = dict(commands(typer.main.get_command(app)))
    found = next(p for p in by_path[path].params if name in p.opts)
    assert found.param_type_name == "option"
    return found


def test_help_states_the_defaults_the_code_has() -> None:
    out = option("servectl convert", "--out")
    assert out.default is not None and out.show_default
    assert "3x --replicas" in (option("servectl export k8s", "--max-replicas").help or "")
    assert option("servectl reload", "--timeout").help
    assert option("servectl export ray", "--gpus").help and option("servectl export ray", "--spec-dir").help


def test_dropped_requests_help_describes_each_reason() -> None:
    family = next(m for m in Metrics().collect() if m.name == "servectl_requests_dropped")
    for reason in DROP_REASONS:
        assert f"{reason} (" in family.documentation
    assert "still queued" in family.documentation  # disconnected counts queued drops only
