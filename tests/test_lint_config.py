"""`ruff check` stays clean after the README's build step: the `models/` folder that
`python -m servectl.examples.build` writes at the root must not change how imports sort."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.paths import ROOT


def test_import_sorting_ignores_a_built_models_folder(tmp_path: Path) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("*.json", "*.png"))
    (tmp_path / "models" / "tiny-gpt2").mkdir(parents=True)  # as the build leaves it
    (tmp_path / "models" / "tiny_net.onnx").write_bytes(b"")
    r = subprocess.run(
        [ruff, "check", "--no-cache", "--select", "I", "."], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
