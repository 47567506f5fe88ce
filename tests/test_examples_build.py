"""`python -m servectl.examples.build` without what it needs: a message naming the extra to
install and a non-zero exit, not a traceback; and that extra holds everything the build imports."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import tomllib

from servectl.examples import build

from support.paths import ROOT


def test_missing_torch_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError; find_spec says absent
    assert build.main(["--out", str(tmp_path / "models")]) == 1
    err = capsys.readouterr().err
    assert "needs torch (not installed): pip install -e '.[examples]'" in err
    assert not (tmp_path / "models").exists()


def test_the_examples_extra_holds_what_the_build_imports() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", req, maxsplit=1)[0] for req in extras["examples"]}
    assert set(build.NEEDS) <= names
