"""`convert --write-spec`: the source spec, serving the ONNX file instead (`backend: onnx`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from servectl.convert.common import ConvertError, Export
from servectl.spec import Spec, SpecError, read_spec_file

_KEYS = ("api_keys", "admin_keys")


def write_onnx_spec(spec: Spec, onnx_path: Path, target: Path, export: Export, inputs: list[str]) -> list[str]:
    """Write the spec that serves `onnx_path` as `spec` served its model: its name, devices,
    batching, limits, api and shared sections as set (resolved), model paths relative to the
    new file. Returns notes on what could not carry over."""
    from servectl.spec import load_deployment

    notes: list[str] = []
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = target.parent.resolve()
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_unset=True)
    model: dict[str, Any] = {"backend": "onnx", "path": os.path.relpath(onnx_path.resolve(), folder)}
    if export.pad is not None:
        model["pad"] = export.pad
    if export.example is not None:
        model["example"] = export.example
    data["model"] = model
    auth, auth_notes = _auth(spec, target)
    data.pop("auth", None)
    if auth:
        data["auth"] = auth
    notes += auth_notes
    api = data.get("api", {})
    if api.get("kind") == "openai":
        api["kind"] = "predict"
        notes.append("api.kind openai serves text: the written spec serves the ONNX model with api.kind predict")
    if spec.handler:
        if spec.model.backend == "transformers":
            data.pop("handler")
            notes.append(f"handler {spec.handler} wrapped a text model: not carried over (the ONNX model takes tokens)")
        else:
            data["handler"] = _handler_ref(spec.handler, spec.base_dir, folder, notes)
    order = ["name", "model", "handler"]
    data = {**{k: data[k] for k in order if k in data}, **{k: v for k, v in data.items() if k not in order}}
    header = [
        f"Written by `servectl convert` from {spec.source}{f' ({spec.entry})' if spec.entry else ''}: "
        f"{spec.name}'s model exported to ONNX ({export.exporter}).",
        "Inputs: " + "; ".join(inputs) + ".",
        *export.usage,
    ]
    text = "".join(f"# {line}\n" for line in header) + yaml.dump(data, Dumper=_Dumper, sort_keys=False)
    target.write_text(text, encoding="utf-8")
    try:
        load_deployment([target])
    except SpecError as exc:
        problems = "; ".join(str(i) for i in exc.issues)
        raise ConvertError(f"the written spec {target} does not validate (a bug in convert): {problems}") from None
    return notes


class _Dumper(yaml.SafeDumper):
    """Block style, but a list that holds no mapping on one line: `[[0.1, 0.2]]`, not a column of numbers."""


def _list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=not _has_mapping(data))


def _has_mapping(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and any(_has_mapping(v) for v in value))


_Dumper.add_representer(list, _list)


def _auth(spec: Spec, target: Path) -> tuple[dict[str, Any], list[str]]:
    """The auth section; keys as written in the source file (`${oc.env:...}` stays an
    interpolation), never a resolved secret written to disk."""
    resolved: dict[str, Any] = spec.auth.model_dump(mode="json", exclude_unset=True)
    try:
        raw = read_spec_file(Path(spec.source)).raw.get("auth")
    except SpecError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    auth = {k: v for k, v in resolved.items() if k not in _KEYS}
    notes = []
    for key in _KEYS:
        if key in raw:
            auth[key] = raw[key]
        elif resolved.get(key):
            notes.append(f"auth.{key} came from an override or another file: not written, set it in {target}")
    if spec.own_api_keys:
        notes.append(f"the entry's own auth.api_keys are not written: add them to {target}'s auth.api_keys")
    return auth, notes


def _handler_ref(ref: str, base: Path, folder: Path, notes: list[str]) -> str:
    """A handler file found from the source spec, named from the new spec's folder."""
    module_ref, sep, attr = ref.partition(":")
    if not (module_ref.endswith(".py") or "/" in module_ref):
        if base.resolve() != folder:
            notes.append(f"handler {ref} is looked up from {folder} (its parent and the working directory) now")
        return ref
    from servectl.handler import _search_dirs

    path = Path(module_ref)
    found = path if path.is_absolute() else next((d / path for d in _search_dirs(base) if (d / path).is_file()), None)
    if found is None:
        notes.append(f"handler {ref} was not found from {base}: written as it was")
        return ref
    return os.path.relpath(found.resolve(), folder) + sep + attr
