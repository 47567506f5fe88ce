"""Loading a spec from YAML through OmegaConf: reading the file with its node positions,
interpolating and overriding, validating into a `Spec`, and naming file, line, column and
dotted field of every problem (`spec_issues.py`). The schema itself is `spec.py`; several
models in one deployment: `deployment_spec.py`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from servectl.spec.base import SHARED_SECTIONS
from servectl.spec.issues import Locator, Path_, SpecError, SpecIssue, dotted, yaml_positions
from servectl.spec.schema import Spec


def _section_fields(path: Path_) -> list[str]:
    """The field names allowed at a path in the schema, for did-you-mean hints."""
    model: type[BaseModel] = Spec
    for part in path:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _describe(error: Any) -> str:
    kind, msg, loc = error["type"], error["msg"], error["loc"]
    if kind == "extra_forbidden":
        allowed = _section_fields(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        return f"unknown key{hint} Allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return "is required"
    return str(msg).removeprefix("Value error, ")


def _clean_loc(loc: tuple[Any, ...]) -> Path_:
    # pydantic adds union member names ("int", "list[int]", "literal['auto']") to locs
    return tuple(p for p in loc if isinstance(p, int) or not re.match(r"^\w+\[|^(int|str)$", p))


@dataclass(frozen=True)
class SpecFile:
    """One spec file, read and parsed as YAML; not yet interpolated nor validated."""

    path: Path
    raw: dict[str, Any]
    positions: dict[Path_, tuple[int, int]]

    @property
    def source(self) -> str:
        return str(self.path)

    def locator(self, overrides: Iterable[str] | Mapping[str, str] = ()) -> Locator:
        return Locator(self.source, self.positions, overrides)


def read_spec_file(spec_path: Path) -> SpecFile:
    """Read and parse one spec file; SpecError if it is not a readable YAML mapping."""
    source = str(spec_path)
    try:
        text = spec_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([SpecIssue(source, None, None, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:  # a model file or archive given by mistake
        raise SpecError([SpecIssue(source, None, None, "", "cannot read: not a text (UTF-8) YAML file")]) from None
    try:
        positions = yaml_positions(text) if text else {}
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        if isinstance(exc, yaml.reader.ReaderError):  # UTF-8, but with NUL or other control bytes
            msg = f"cannot read: not a text YAML file (control character #x{exc.character:04x})"
            raise SpecError([SpecIssue(source, None, None, "", msg)]) from None
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecIssue(source, line, col, "", f"YAML syntax error: {problem}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError([SpecIssue(source, 1, 1, "", "the spec must be a YAML mapping of keys")])
    return SpecFile(spec_path, raw, positions)


def resolve(
    file: SpecFile, locator: Locator, overrides: list[str], updates: list[tuple[str, Any]] | None = None
) -> dict[str, Any]:
    """Merge the dotlist `overrides` and the (key, subtree) `updates` (keys may index lists:
    `models.1`) into a file's tree, then interpolate it; SpecError names what cannot resolve."""
    try:
        cfg: Any = OmegaConf.create(file.raw)
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        for key, subtree in updates or []:
            OmegaConf.update(cfg, key, subtree, merge=True)
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", "") or "")
        parts: Path_ = tuple(int(p) if p.isdigit() else p for p in key.split(".") if p)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError([locator.issue(parts, f"cannot resolve: {msg}")]) from None
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def describe_errors(exc: ValidationError, locator: Locator, at: Path_ = ()) -> list[SpecIssue]:
    """Pydantic's errors of a Spec (or of its sections) validated from the keys at `at`, located."""
    return [locator.issue((*at, *_clean_loc(e["loc"])), _describe(e)) for e in exc.errors()]


def validate_model(data: dict[str, Any], file: SpecFile, locator: Locator, entry: Path_ = ()) -> Spec:
    """Validate one model's resolved keys (at `entry` in its file) into a Spec located in its file."""
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe_errors(exc, locator, entry)) from None
    spec._source = file.source
    spec._base_dir = str(file.path.resolve().parent)
    spec._entry = dotted(entry)
    return spec


def issue_at(spec: Spec, field: str, message: str) -> SpecIssue:
    """A SpecIssue for a field of an already loaded spec (cold path: re-reads the file).

    A model field of an entry of `models:` is located (and named) within its entry.
    """
    try:
        positions = yaml_positions(Path(spec.source).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        positions = {}
    path: Path_ = tuple(int(p) if p.isdigit() else p for p in field.split("."))
    if spec.entry and path[0] not in SHARED_SECTIONS:
        path = (*tuple(int(p) if p.isdigit() else p for p in spec.entry.split(".")), *path)
    return Locator(spec.source, positions, []).issue(path, message)
