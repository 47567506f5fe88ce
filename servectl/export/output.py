"""Writing manifests: one YAML file per object, spec text as readable literal blocks.

Files are named for what they hold, so `kubectl apply -f DIR` applies exactly the objects
meant to be applied: a template that must be filled in first is named `*.yaml.template`,
which kubectl skips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# every name export may write: a file of an earlier export that this one does not write is removed
KNOWN_FILES = (
    "configmap.yaml",
    "secret.yaml.template",
    "deployment.yaml",
    "service.yaml",
    "pdb.yaml",
    "hpa.yaml",
    "rayservice.yaml",
)


@dataclass(frozen=True)
class Document:
    """One manifest file: its name, the object, and a comment written above it."""

    filename: str
    manifest: dict[str, Any]
    comment: str = ""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (spec files, serve configs) as `|` blocks, so a reviewer reads them as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(document: Document) -> str:
    comment = "".join(f"# {line}".rstrip() + "\n" for line in document.comment.splitlines())
    return comment + yaml.dump(document.manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def write(out: Path, documents: Sequence[Document]) -> tuple[list[Path], list[Path]]:
    """Write the documents into `out` (created if needed); the paths written, and stale ones removed."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for document in documents:
        path = out / document.filename
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    names = {d.filename for d in documents}
    stale = [out / n for n in KNOWN_FILES if n not in names and (out / n).is_file()]
    for path in stale:
        path.unlink()
    return written, stale
