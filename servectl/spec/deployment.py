"""Several models in one server: `DeploymentSpec`, and loading it from one or more spec files.

A deployment is read from one or more files. Each file holds either one model (the
single-model format: the model's keys at the top level) or `models:`, a list of model
entries. `server` and `auth` are shared and stay at the top level: the first file's apply
to every model; a later file may repeat a setting but not change it. Each model becomes a
`Spec` that carries the shared sections, so what reads a `Spec` serves one model unchanged.

Overrides (dotlist) address the deployment as a whole: `server.port=9000` the shared
sections; `models.1.batching.max_batch_size=64` (the index counts every model of every
file, in order) or `models.embed.batching.max_batch_size=64` (a name as written) one
model; a model's key alone (`batching.max_batch_size=64`) while there is only one model.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from servectl.spec.base import DEFAULT_SPEC, NAME_PATTERN, SHARED_SECTIONS
from servectl.spec.issues import Locator, Path_, SpecError, SpecIssue, dotted
from servectl.spec.keys import AuthSpec, ModelAuthSpec
from servectl.spec.loading import SpecFile, describe_errors, read_spec_file, resolve, validate_model
from servectl.spec.schema import Spec
from servectl.spec.server import API_PROCESSES_ON_RAY, RuntimeSpec, ServerSpec

MODEL_KEYS = tuple(k for k in Spec.model_fields if k not in SHARED_SECTIONS)
DEFAULT_NAME: str = Spec.model_fields["name"].default


def default_path(name: str, models: int) -> str:
    """A model's `api.path` when its entry names none."""
    return "/predict" if models == 1 else f"/models/{name}/predict"


class SharedSpec(BaseModel):
    """The sections one server has, whatever it serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: ServerSpec = ServerSpec()
    auth: AuthSpec = AuthSpec()
    runtime: RuntimeSpec = RuntimeSpec()


class DeploymentSpec(SharedSpec):
    """Every model one server serves, and the sections they share (which each `Spec` carries)."""

    models: list[Spec] = Field(
        min_length=1,
        description="Several models in one server: a list (at least one) of model entries, each holding what a "
        "single-model spec says about its model (`name`, `model`, `handler`, `devices`, `batching`, "
        "`limits`, `api`, `supervisor`, `cache`, `scaling`, with the same defaults, but api.path: "
        "`/models/{name}/predict` while there are several models). Names and paths must be unique. "
        "`server`, `auth` and `runtime` stay at the top level, shared by every model; an entry may add "
        "`auth: {api_keys: [...]}`, keys for its routes only. A model's key beside `models:`, or `server`, "
        "`runtime` or another `auth` key inside an entry, is an error. Each model gets its own queue, "
        "batcher, deadline, body limit and workers.",
    )

    @model_validator(mode="after")
    def _one_server(self) -> DeploymentSpec:
        for what, values in (("name", [m.name for m in self.models]), ("api.path", [m.api.path for m in self.models])):
            if len(set(values)) != len(values):
                raise ValueError(f"models share a {what}: {values}")
        if any(m.server != self.server or m.auth != self.auth or m.runtime != self.runtime for m in self.models):
            raise ValueError("every model must carry the deployment's server, auth and runtime")
        return self

    @classmethod
    def of(cls, spec: Spec) -> DeploymentSpec:
        """The deployment of one model."""
        return cls(server=spec.server, auth=spec.auth, runtime=spec.runtime, models=[spec])

    @property
    def sources(self) -> list[str]:
        """The spec files, in the order given."""
        return list(dict.fromkeys(m.source for m in self.models))

    def model(self, name: str) -> Spec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def only_model(self) -> Spec:
        """The one model of a one-model deployment; SpecError when there are several."""
        if len(self.models) == 1:
            return self.models[0]
        names = ", ".join(m.name for m in self.models)
        message = f"{len(self.models)} models here ({names}) where one was expected: load them with load_deployment"
        raise SpecError([SpecIssue(self.sources[0], None, None, "models", message)])

    def public_dict(self) -> dict[str, Any]:
        """The resolved deployment without secrets, for `validate --print`."""
        first = self.models[0].public_dict()
        models = [{k: v for k, v in m.public_dict().items() if k not in SHARED_SECTIONS} for m in self.models]
        return {**{k: first[k] for k in SHARED_SECTIONS}, "models": models}


@dataclass
class _File:
    """One file of the deployment while loading: the overrides routed to it, its resolved keys."""

    spec_file: SpecFile
    overrides: dict[str, str] = field(default_factory=dict)  # key set here -> the override as written
    dotlist: list[str] = field(default_factory=list)
    updates: list[tuple[str, Any]] = field(default_factory=list)  # (models.N, subtree): OmegaConf merges into lists
    data: dict[str, Any] = field(default_factory=dict)
    shared: SharedSpec | None = None

    @property
    def locator(self) -> Locator:
        return self.spec_file.locator(self.overrides)


@dataclass
class _Model:
    """One model of the deployment while loading."""

    file: _File
    entry: Path_  # where its keys are in the file: () or ("models", N)
    written_name: object  # its name before interpolation, for overrides by name
    spec: Spec | None = None

    def where(self, path: Path_) -> str:
        """`models.0.name at file:line:column`: names the entry and where it is written."""
        full = (*self.entry, *path)
        return f"{dotted(full)} at {self.file.locator.position(full)}"


def load_deployment(
    paths: str | Path | Sequence[str | Path] | None = None, overrides: Sequence[str] | None = None
) -> DeploymentSpec:
    """Load, interpolate, override and validate a deployment from one or more spec files.

    Raises SpecError listing every issue found, each with its file, line, column and field.
    """
    if paths is None:
        paths = [DEFAULT_SPEC]
    elif isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise ValueError("load_deployment needs at least one spec file")
    issues: list[SpecIssue] = []
    files: list[_File] = []
    for path in paths:
        try:
            files.append(_File(read_spec_file(Path(path))))
        except SpecError as exc:
            issues += exc.issues
    models = [m for f in files for m in _models_written(f, issues)]
    _raise(issues)
    _route_overrides(list(overrides or []), files, models, issues)
    _raise(issues)
    for f in files:
        try:
            f.data = resolve(f.spec_file, f.locator, f.dotlist, f.updates)
        except SpecError as exc:
            issues += exc.issues
    _raise(issues)
    for f in files:
        _check_top_level(f, issues)
        _validate_shared(f, issues)
    _check_shared_agree(files, issues)
    shared = files[0].data if files[0].shared is not None else {}
    for m in models:
        _validate_model(m, {k: shared[k] for k in SHARED_SECTIONS if k in shared}, len(models), issues)
    _check_unique(models, issues)
    _raise(issues)
    first = files[0].shared
    assert first is not None
    models_ = [m.spec for m in models if m.spec]
    return DeploymentSpec(server=first.server, auth=first.auth, runtime=first.runtime, models=models_)


def _raise(issues: list[SpecIssue]) -> None:
    if issues:
        raise SpecError(issues)


def _models_written(f: _File, issues: list[SpecIssue]) -> list[_Model]:
    """The models a file holds, as written: one, or one per entry of `models:`."""
    raw = f.spec_file.raw
    if "models" not in raw:
        return [_Model(f, (), raw.get("name", DEFAULT_NAME))]
    entries = raw["models"]
    locator = f.spec_file.locator()
    if not isinstance(entries, list) or not entries:
        issues.append(locator.issue(("models",), "must be a list of model entries (at least one)"))
        return []
    found = []
    for j, entry in enumerate(entries):
        if isinstance(entry, dict):
            found.append(_Model(f, ("models", j), entry.get("name", DEFAULT_NAME)))
        else:
            issues.append(locator.issue(("models", j), "a model entry must be a mapping of keys (name, model, ...)"))
    return found


def _route_overrides(overrides: list[str], files: list[_File], models: list[_Model], issues: list[SpecIssue]) -> None:
    """Give each override to the file (and entry) it sets; the shared sections are the first file's."""
    for text in overrides:
        key, sep, value = text.partition("=")
        parts = key.strip().split(".")
        head = parts[0].lstrip("+~")
        if head == "models":
            model = _pick(parts[1] if len(parts) > 1 else "", models)
            if model is None or len(parts) < 3:
                listed = ", ".join(f"{i} ({m.written_name})" for i, m in enumerate(models))
                message = f"say models.INDEX.FIELD or models.NAME.FIELD, one of the models: {listed}"
                issues.append(SpecIssue(f"{files[0].spec_file.source} (override {text!r})", None, None, key, message))
                continue
            rest = parts[2:]
        elif head in MODEL_KEYS:
            if len(models) != 1:
                message = (
                    f"{len(models)} models here: say which, as models.INDEX.{key} or models.NAME.{key} "
                    f"(e.g. models.{models[0].written_name}.{key})"
                )
                issues.append(SpecIssue(f"{files[0].spec_file.source} (override {text!r})", None, None, key, message))
                continue
            model, rest = models[0], parts
        else:  # a shared section, or a key nothing has: the first file says which
            files[0].dotlist.append(text)
            files[0].overrides[key.strip().lstrip("+~")] = text
            continue
        f, setting = model.file, f"{'.'.join(rest)}{sep}{value}"
        if model.entry:
            subtree = OmegaConf.to_container(OmegaConf.from_dotlist([setting]))
            f.updates.append((dotted(model.entry), subtree))
        else:
            f.dotlist.append(setting)
        f.overrides[dotted((*model.entry, *(p.lstrip("+~") for p in rest)))] = text


def _pick(selector: str, models: list[_Model]) -> _Model | None:
    if selector.isdigit():
        return models[int(selector)] if int(selector) < len(models) else None
    return next((m for m in models if m.written_name == selector), None)


def _check_top_level(f: _File, issues: list[SpecIssue]) -> None:
    """Beside `models:` only the shared sections."""
    if "models" not in f.data:
        return
    allowed = ["models", *SHARED_SECTIONS]
    for key in f.data:
        if key in allowed:
            continue
        if key in MODEL_KEYS:
            message = f"{key!r} is a model's key: beside models: it belongs in each entry (here: {', '.join(allowed)})"
        else:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            message = f"unknown key{hint} Allowed beside models: {', '.join(allowed)}"
        issues.append(f.locator.issue((key,), message))


def _validate_shared(f: _File, issues: list[SpecIssue]) -> None:
    try:
        shared = SharedSpec.model_validate({k: f.data[k] for k in SHARED_SECTIONS if k in f.data})
    except ValidationError as exc:
        issues += describe_errors(exc, f.locator)
        return
    if shared.server.api_processes > 1 and shared.runtime.kind == "ray":  # once, where it is written
        issues.append(f.locator.issue(("server", "api_processes"), API_PROCESSES_ON_RAY))
        return
    f.shared = shared


def _check_shared_agree(files: list[_File], issues: list[SpecIssue]) -> None:
    """A later file may repeat a shared setting, not change it (unless an override sets it for all)."""
    first = files[0]
    if first.shared is None:
        return
    for later in files[1:]:
        if later.shared is None:
            continue
        for section in SHARED_SECTIONS:
            applies, repeats = getattr(first.shared, section), getattr(later.shared, section)
            for name in sorted(repeats.model_fields_set):
                if {section, f"{section}.{name}"} & set(first.overrides):
                    continue
                mine, applied = getattr(repeats, name), getattr(applies, name)
                if mine == applied:
                    continue
                secret = (section, name) == ("auth", "api_keys")
                if name in applies.model_fields_set:
                    value = "other keys" if secret else repr(applied)
                    there = f"{first.locator.position((section, name))} sets {value}"
                else:
                    there = f"{first.spec_file.source} leaves it at its default {applied!r}"
                message = (
                    f"{'these keys differ' if secret else repr(mine)} here, but {there}, and the first file's "
                    f"{section} applies to every model: make them agree, or override {section}.{name} for all"
                )
                issues.append(later.locator.issue((section, name), message))


def _validate_model(m: _Model, shared: dict[str, Any], models: int, issues: list[SpecIssue]) -> None:
    """One entry's keys with the deployment's shared sections; its api.path defaulted by the count of models."""
    f = m.file
    data: Any = f.data
    for part in m.entry:
        data = data[part] if isinstance(data, dict) else data[int(part)]
    if not isinstance(data, dict):
        issues.append(f.locator.issue(m.entry, "a model entry must be a mapping of keys (name, model, ...)"))
        return
    own = None
    if m.entry:
        for key in ("server", "runtime"):
            if key in data:
                message = f"{key!r} is shared by every model: it belongs at the top level, beside models:"
                issues.append(f.locator.issue((*m.entry, key), message))
        own = _own_auth(m, data.get("auth"), issues)
    data = {k: v for k, v in data.items() if k not in SHARED_SECTIONS}
    api, name = data.get("api", {}), data.get("name", DEFAULT_NAME)
    named = isinstance(name, str) and re.fullmatch(NAME_PATTERN, name)  # else the name's own error says enough
    if models > 1 and named and isinstance(api, dict) and "path" not in api:
        data["api"] = {**api, "path": default_path(name, models)}
    try:
        m.spec = validate_model({**data, **shared}, f.spec_file, f.locator, m.entry)
    except SpecError as exc:
        issues += exc.issues
        return
    if own is not None:
        m.spec._own_keys = own.api_keys


def _own_auth(m: _Model, auth: object, issues: list[SpecIssue]) -> ModelAuthSpec | None:
    """An entry's own `auth:` holds only `api_keys` (accepted on its routes); the rest of auth is shared."""
    if auth is None:
        return None
    at = (*m.entry, "auth")
    if isinstance(auth, dict) and set(auth) - {"api_keys"}:
        for key in sorted(set(auth) - {"api_keys"}):
            message = (
                f"a model's auth holds only api_keys (its own keys); {key!r} is shared: set it in the top-level auth"
            )
            issues.append(m.file.locator.issue((*at, key), message))
        return None
    try:
        return ModelAuthSpec.model_validate(auth)
    except ValidationError as exc:
        issues += describe_errors(exc, m.file.locator, at)
        return None


def _check_unique(models: list[_Model], issues: list[SpecIssue]) -> None:
    """Names and paths: one model each (a path clash that follows from a name clash is not said twice)."""
    clashed: set[int] = set()
    for what, path in (("name", ("name",)), ("api.path", ("api", "path"))):
        seen: dict[str, _Model] = {}
        for m in models:
            if m.spec is None or id(m) in clashed:
                continue
            value = m.spec.name if what == "name" else m.spec.api.path
            other = seen.setdefault(value, m)
            if other is not m:
                clashed.add(id(m))
                message = f"{value!r} is already the {what} of {other.where(path)}: each model needs its own"
                issues.append(m.file.locator.issue((*m.entry, *path), message))


def load_spec(path: str | Path | None = None, overrides: list[str] | None = None) -> Spec:
    """Load, interpolate, override and validate a one-model spec; raise SpecError listing every issue.

    A file with `models:` (or overrides `models.0.…`) is loaded by `load_deployment`;
    here it must hold one model.
    """
    overrides = list(overrides or [])
    file = read_spec_file(Path(path) if path is not None else DEFAULT_SPEC)
    if "models" in file.raw or any(o.lstrip("+~").startswith("models.") for o in overrides):
        return load_deployment([file.path], overrides).only_model()
    locator = file.locator(overrides)
    return validate_model(resolve(file, locator, overrides), file, locator)
