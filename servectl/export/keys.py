"""API and admin keys in exported manifests: always from a Secret, never from the spec text.

The ConfigMap holds the spec files as written, so a key written in one would be readable by
anyone who may read ConfigMaps. Every key field must therefore be null or reference an
environment variable (`${oc.env:SERVECTL_API_KEYS}`), which the pod fills from a Secret.
A literal key is refused (with file, line and field), never rewritten: the user's file
stays the single source of truth.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from servectl.spec import Path_, SpecError, SpecFile, SpecIssue

KEY_FIELDS = ("api_keys", "admin_keys")
SUGGESTED = {"api_keys": "SERVECTL_API_KEYS", "admin_keys": "SERVECTL_ADMIN_KEYS", "key": "SERVECTL_TEAM_KEY"}
# one variable, with no default or a null one: a default would be a key written in the file
ENV_REFERENCE = re.compile(r"^\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)(,\s*null\s*)?\}$")
PLACEHOLDER = "servectl-export-placeholder-key"  # what the key variables hold while exporting


@dataclass
class KeyVariables:
    """The environment variables the spec's key fields read, by field: the Secret's entries."""

    api: list[str] = field(default_factory=list)
    admin: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return list(dict.fromkeys([*self.api, *self.admin]))

    def add(self, key_field: str, name: str) -> None:
        names = self.admin if key_field == "admin_keys" else self.api
        if name not in names:
            names.append(name)


def key_variables(files: Sequence[SpecFile], overrides: Sequence[str]) -> KeyVariables:
    """The variables every key field of the files and overrides reads; SpecError for a key written out."""
    found, issues = KeyVariables(), []
    for spec_file in files:
        locator = spec_file.locator()
        for path, value in _key_values(spec_file.raw):
            problem = _check(value, path, found)
            if problem:
                issues.append(locator.issue(path, problem))
    source = files[0].source if files else "<spec>"
    for text in overrides:
        key = text.partition("=")[0].strip()
        problem = _override_problem(text, found)
        if problem:  # named by its key alone: the value may be a key
            issues.append(SpecIssue(f"{source} (override {key}=...)", None, None, key, problem))
    if issues:
        raise SpecError(issues)
    return found


def _override_problem(text: str, found: KeyVariables) -> str | None:
    """Why an override would write a key into the pod's arguments, or None."""
    key, _, value = text.partition("=")
    parts = tuple(key.strip().lstrip("+~").split("."))
    at = 2 if parts[0] == "models" else 0  # models.NAME.auth... or auth...
    if len(parts) <= at or parts[at] != "auth":
        return None
    rest = parts[at + 1 :]
    if not rest:
        return (
            "override auth.api_keys and auth.admin_keys one by one, each as an environment reference: "
            "auth.api_keys=${oc.env:SERVECTL_API_KEYS}"
        )
    if rest[0] == "keys":  # a named key's `key` (or the whole list) on the command line
        if rest[-1] != "key":
            return "override auth.keys entries' key fields one by one, each as an environment reference"
        return _check(value.strip(), parts, found)
    if rest[0] not in KEY_FIELDS:
        return None
    return _check(None if value.strip() == "null" else value.strip(), parts, found)


def _key_values(raw: dict[str, object]) -> Iterator[tuple[Path_, object]]:
    """(path, value as written) of every key field: the shared `auth`, and each entry's own."""
    sections: list[tuple[Path_, object]] = [(("auth",), raw.get("auth"))]
    models = raw.get("models")
    if isinstance(models, list):
        sections += [(("models", i, "auth"), m.get("auth")) for i, m in enumerate(models) if isinstance(m, dict)]
    for at, section in sections:
        if isinstance(section, dict):
            yield from (((*at, k), section[k]) for k in KEY_FIELDS if k in section)
            named = section.get("keys")  # auth.keys: [{key, name, ...}]: each key as the fields' are
            if isinstance(named, list):
                for i, entry in enumerate(named):
                    key = entry.get("key") if isinstance(entry, dict) else entry
                    yield (*at, "keys", i, "key"), key
            elif named is not None:
                yield (*at, "keys"), named
        elif section is not None:  # `auth: ${...}` or a list: whatever it holds would be in the ConfigMap
            yield at, section


def _check(value: object, path: Path_, found: KeyVariables) -> str | None:
    """None when `value` is null or environment references (noted in `found`), else the problem."""
    key_field = str(path[-1]) if path[-1] in (*KEY_FIELDS, "key") else "api_keys"
    if path[-1] == "key" and value is None:
        return "auth.keys: each entry needs its key, from the environment"
    values = value if isinstance(value, list) else [value]
    for item in values:
        if item is None and not isinstance(value, list):
            return None
        match = ENV_REFERENCE.match(item.strip()) if isinstance(item, str) else None
        if match is None:
            suggested = SUGGESTED[key_field]
            default = isinstance(item, str) and item.strip().startswith("${oc.env:") and "," in item
            what = "its default is a key written out" if default else "a key written out (or an expression)"
            return (
                f"{what}: the exported manifests carry the spec and its overrides as written, so keys must "
                f"come from the environment: write ${{oc.env:{suggested}}} (or ${{oc.env:{suggested},null}}) "
                f"and put the keys in the Secret"
            )
        found.add(key_field, match.group(1))
    return None


@contextmanager
def placeholder_keys(names: Sequence[str]) -> Iterator[None]:
    """Set the key variables to a placeholder while the spec is loaded for export.

    Exporting must neither need the real keys on this machine nor ever see them: the values
    loaded are only checked, never written.
    """
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, PLACEHOLDER))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
