"""The docs' code blocks are tests (docs/snippets.py): README.md and docs/**/*.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "docs"))

from snippets import collector, stop_servers

pytest_collect_file = collector()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".md":  # they serve and build models: the e2e tests' kind
            item.add_marker(pytest.mark.e2e)


def pytest_sessionfinish() -> None:
    stop_servers()
