"""Helpers of the export tests: run `servectl export k8s` in-process and read what it wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import yaml
from typer.testing import CliRunner

from servectl.cli.export import export_app

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.31.0"  # the Kubernetes the manifests are validated against


def cli() -> typer.Typer:
    """servectl's own app once it registers `export`; until then a root app with the same group."""
    from servectl.cli import app

    if any(group.name == "export" for group in app.registered_groups):
        return app
    root = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    root.add_typer(export_app, name="export")
    return root


@dataclass
class Exported:
    code: int
    output: str
    out: Path

    @property
    def files(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted(self.out.iterdir())} if self.out.exists() else {}

    def doc(self, name: str) -> dict[str, Any]:
        loaded = yaml.safe_load((self.out / name).read_text())
        assert isinstance(loaded, dict)
        return loaded

    @property
    def container(self) -> dict[str, Any]:
        return self.doc("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]


def export_k8s(out: Path, *args: str) -> Exported:
    result = CliRunner().invoke(cli(), ["export", "k8s", *args, "--out", str(out)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Exported(result.exit_code, result.output, out)


def write_yaml(folder: Path, name: str, data: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
