"""Problems in a spec, located in its YAML: `SpecIssue`, `SpecError`, and the locator that
turns a field path into file:line:column (or names the command-line override at fault)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class SpecIssue:
    """One problem found in a spec, located as precisely as the YAML allows."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.field or '<spec>'}: {self.message}"


class SpecError(Exception):
    """A spec that cannot be used; carries every issue found."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


Path_ = tuple[str | int, ...]


def yaml_positions(text: str) -> dict[Path_, tuple[int, int]]:
    """Map each dotted path in a YAML document to the (line, column) of its key."""
    positions: dict[Path_, tuple[int, int]] = {}

    def walk(node: yaml.Node, path: Path_) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                positions[sub] = (key.start_mark.line + 1, key.start_mark.column + 1)
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                positions[(*path, i)] = (item.start_mark.line + 1, item.start_mark.column + 1)
                walk(item, (*path, i))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return positions


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)


class Locator:
    """Turns a field path of one spec file into a located SpecIssue.

    `overrides`: the command-line overrides that apply to this file, as `key=value` texts or
    as a mapping of the key they set here to the text the user wrote.
    """

    def __init__(
        self, source: str, positions: dict[Path_, tuple[int, int]], overrides: Iterable[str] | Mapping[str, str] = ()
    ) -> None:
        self.source = source
        self.positions = positions
        if isinstance(overrides, Mapping):
            self.overrides = dict(overrides)
        else:
            self.overrides = {o.split("=", 1)[0].strip().lstrip("+~"): o for o in overrides}

    def position(self, path: Path_) -> str:
        """Where a field is written, `file:line:column` (or the override that set it, or the file)."""
        issue = self.issue(path, "")
        return issue.file if issue.line is None else f"{issue.file}:{issue.line}:{issue.column}"

    def issue(self, path: Path_, message: str) -> SpecIssue:
        where = dotted(path)
        for n in range(len(path), 0, -1):
            prefix = dotted(path[:n])
            if prefix in self.overrides:
                return SpecIssue(f"{self.source} (override {self.overrides[prefix]!r})", None, None, where, message)
            if path[:n] in self.positions:
                line, col = self.positions[path[:n]]
                return SpecIssue(self.source, line, col, where, message)
        return SpecIssue(self.source, None, None, where, message)
