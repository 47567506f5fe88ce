"""The reference pages, rendered from the code so they cannot drift: the spec's keys from the
pydantic schema, the commands from Typer's own help, the metrics from the registry, the
errors from `servectl.errors.ERRORS`. `docs/hooks.py` puts them into the site at build time;
a missing description is an error (`Undescribed`), so the build, and the tests, fail on it."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo


class Undescribed(Exception):
    """A spec key, command option or metric without a description."""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# --- the spec --------------------------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without `None`, and whether it is a list of it."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if get_origin(annotation) is list:
        return get_args(annotation)[0], True
    return annotation, False


def _section(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _unwrap(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in get_args(annotation))
    if origin is list:
        return f"list of {_type(get_args(annotation)[0])}"
    if origin is dict:
        return "mapping"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _bounds(field: FieldInfo) -> str:
    marks = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=", "max_length": "length <="}
    out = []
    for meta in field.metadata:
        for attr, sign in marks.items():
            if isinstance(meta, annotated_types.BaseMetadata) and hasattr(meta, attr):
                out.append(f"{sign} {getattr(meta, attr)}")
    return f" ({', '.join(out)})" if out else ""


def spec_keys(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(dotted key, type, default, meaning) of every key under `model`, sections first-class."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section(field.annotation)
        _, many = _unwrap(field.annotation)
        doc = (field.description or (section.__doc__ if section is not None else None) or "").strip()
        kind = "list of objects" if section is not None and many else _type(field.annotation)
        yield key, kind + _bounds(field), _default(field), doc.split("\n\n")[0]
        if section is not None:
            yield from spec_keys(section, f"{key}[]." if many else f"{key}.")


def check_described(keys: Iterator[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """The keys, or `Undescribed` naming every one without a description."""
    rows = list(keys)
    missing = [k for k, _, _, doc in rows if not doc]
    if missing:
        raise Undescribed("spec keys without a description: " + ", ".join(missing))
    return rows


def spec_reference() -> str:
    from servectl.spec import Spec
    from servectl.spec.deployment import DeploymentSpec

    rows = check_described(spec_keys(Spec))
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {_cell(t)} | {_cell(d)} | {_cell(m)} |" for k, t, d, m in rows]
    field = DeploymentSpec.model_fields["models"]
    if not field.description:
        raise Undescribed("spec key 'models' has no description")
    lines += ["", f"`models`: {_cell(field.description)}", ""]
    return "\n".join(lines) + "\n"


# --- the commands ----------------------------------------------------------------------


def _commands(group: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every leaf command under a click (or Typer's vendored click) group."""
    if hasattr(group, "commands"):
        for name in sorted(group.commands):
            yield from _commands(group.commands[name], f"{path} {name}")
    else:
        yield path, group


def cli_reference(app: Any, prog: str = "servectl") -> str:
    """Each command's usage, help and options, as `--help` prints them (Typer's own)."""
    out: list[str] = []
    for path, command in _commands(app, prog):
        ctx = command.context_class(command, info_name=path)
        if not (command.help or "").strip():
            raise Undescribed(f"command {path!r} has no help")
        out += [f"## `{path}`", "", "```text", command.get_usage(ctx), "```", ""]
        out += [command.help.strip().replace("\b\n", ""), ""]
        rows = []
        for param in command.get_params(ctx):
            if param.name == "help":
                continue
            record = param.get_help_record(ctx)  # (names and value, help [default: ...]), as --help prints
            names, helped = record if record else (param.name, "")
            if not (getattr(param, "help", None) or "").strip():
                raise Undescribed(f"{path}: {names} has no help")
            rows.append(f"| `{_cell(names)}` | {_cell(helped)} |")
        if rows:
            out += ["| argument or option | meaning |", "|---|---|", *rows, ""]
    return "\n".join(out)


# --- metrics and errors ----------------------------------------------------------------


def metrics_reference() -> str:
    """Every family the registry exports (one model and one named key counted, so that
    families that appear on use appear here too), and every gauge a runtime registers."""
    from servectl.metrics import GAUGES, Metrics

    metrics = Metrics()
    metrics.model("m")
    metrics.observe_request("m", "/predict", 200, 0.01)
    metrics.observe_key("m", "team", 200, 1, 1)
    model = metrics.model("m")
    for name in GAUGES:
        model.gauge(name, lambda: {"0": 1.0})
    for counts in (model.cache, model.rate_limited, model.redis_errors):
        counts["x"] = 1
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for family in metrics.collect():
        if not family.documentation.strip():
            raise Undescribed(f"metric {family.name!r} has no help")
        suffix = "_total" if family.type == "counter" else ""
        labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
        lines.append(
            f"| `{family.name}{suffix}` | {family.type} | {', '.join(f'`{x}`' for x in labels)} "
            f"| {_cell(family.documentation)} |"
        )
    lines.append("| `process_*` | | | The API process's own CPU, memory and open files (prometheus-client's). |")
    return "\n".join(lines) + "\n"


def errors_reference() -> str:
    from servectl.errors import ERRORS

    lines = ["| kind | status | retry | when |", "|---|---|---|---|"]
    for kind, info in sorted(ERRORS.items(), key=lambda item: (item[1].statuses, item[0])):
        statuses = ", ".join(str(s) for s in info.statuses)
        lines.append(f"| `{kind}` | {statuses} | {'yes' if info.retry else ''} | {_cell(info.when)} |")
    return "\n".join(lines) + "\n"


_EXTRAS = {"python": "", "pytorch": "`pytorch`", "onnx": "`onnx` (or `onnx-cpu`)", "transformers": "`transformers`"}


def _handler_backend(root: Path, entry: dict[str, Any]) -> str:
    """`pytorch` when the entry's handler file imports torch."""
    handler = str(entry.get("handler") or "")
    name = handler.split(":")[0].removesuffix(".py").replace(".", "/")
    path = root.parent / f"{name}.py"
    return "pytorch" if path.exists() and "import torch" in path.read_text() else "python"


def examples_reference() -> str:
    """The example configs: what each serves (its header comment), its port and the extras
    it needs, read from the files themselves."""
    import yaml

    root = Path(__file__).resolve().parent.parent / "configs"
    lines = ["| config | port | needs | what it serves |", "|---|---|---|---|"]
    for path in sorted(root.glob("*.yaml")):
        text = path.read_text()
        header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
        if not header:
            raise Undescribed(f"{path.name} has no header comment saying what it serves")
        data = yaml.safe_load(text)
        entries = data.get("models") or [data]
        port = str((data.get("server") or {}).get("port", 8000))
        port = "8000 (`SERVECTL_PORT`)" if "SERVECTL_PORT" in port else port
        backends = sorted({(e.get("model") or {}).get("backend", "python") for e in entries})
        backends += [_handler_backend(root, e) for e in entries]
        extras = sorted({_EXTRAS[b] for b in backends if _EXTRAS[b]})
        built = any("models" in str((e.get("model") or {}).get("path", "")) for e in entries)
        needs = ", ".join(extras + (["`models/` built"] if built else [])) or "nothing"
        lines.append(
            f"| [`configs/{path.name}`](https://github.com/servectl/servectl/blob/main/configs/{path.name}) "
            f"| {port} | {needs} | {_cell(header)} |"
        )
    return "\n".join(lines) + "\n"


def extras_reference() -> str:
    """The extras, from pyproject.toml: each one's packages and what it is for (its comment)."""
    import tomllib  # Python 3.11+, as the docs build

    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    extras = tomllib.loads(path.read_text())["project"]["optional-dependencies"]
    lines = ["| extra | installs | for |", "|---|---|---|"]
    previous = ""
    for line in path.read_text().split("[project.optional-dependencies]")[1].split("\n[")[0].splitlines():
        found = re.match(r"^([\w-]+) = \[.*?(?:#\s*(.*))?$", line)
        if found is None:
            previous = line.lstrip("# ").strip() if line.startswith("#") else ""
            continue
        name, comment = found.group(1), (found.group(2) or previous).strip()
        if not comment:
            raise Undescribed(f"extra {name!r} has no comment in pyproject.toml saying what it is for")
        packages = sorted({re.split(r"[<>=\[ ]", req)[0] for req in extras[name]})
        shown = ", ".join(packages) if len(packages) <= 8 else f"{len(packages)} packages"
        lines.append(f"| `{name}` | {_cell(shown)} | {_cell(comment)} |")
        previous = ""
    return "\n".join(lines) + "\n"


def render(name: str) -> str:
    """The generated part of reference page `name`: spec, cli, metrics or errors."""
    if name == "cli":
        import typer.main

        from servectl.cli.main import app

        return cli_reference(typer.main.get_command(app))
    pages = {"spec": spec_reference, "metrics": metrics_reference, "errors": errors_reference}
    return {**pages, "examples": examples_reference, "extras": extras_reference}[name]()


if __name__ == "__main__":
    import sys

    print(render(sys.argv[1]))
