"""The generated reference (docs/reference_pages.py): it renders, and it refuses a spec key,
a command option or a metric without a description, so adding one undescribed fails CI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer
import typer.main
from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "docs"))

import reference_pages
from reference_pages import Undescribed


@pytest.mark.parametrize("name", ["spec", "cli", "metrics", "errors", "examples", "extras"])
def test_every_reference_page_renders(name: str) -> None:
    text = reference_pages.render(name)
    assert text.count("\n|") > 5


def test_the_spec_reference_lists_nested_keys_with_types_and_defaults() -> None:
    text = reference_pages.render("spec")
    assert "| `limits.timeout_s` | float (> 0, <= 86400) | `30.0` |" in text
    assert "| `auth.keys[].name` |" in text
    assert "`batching.max_batch_size`" in text and "`server.tracing.sample_ratio`" in text


def test_a_spec_key_without_a_description_fails() -> None:
    class Inner(BaseModel):
        """A section."""

        described: int = Field(1, description="Has one.")
        bare: int = 2

    class Outer(BaseModel):
        inner: Inner = Inner()

    keys = {key: doc for key, _, _, doc in reference_pages.spec_keys(Outer)}
    assert keys["inner"] == "A section." and keys["inner.described"] == "Has one."
    assert keys["inner.bare"] == ""  # spec_reference raises on an empty one:
    with pytest.raises(Undescribed, match=r"inner\.bare"):
        reference_pages.check_described(reference_pages.spec_keys(Outer))


def test_an_option_without_help_fails() -> None:
    app = typer.Typer()

    @app.command()
    def first(flag: bool = typer.Option(False, help="Described.")) -> None:
        """A command."""

    @app.command()
    def second(count: int = typer.Option(1)) -> None:
        """Another."""

    with pytest.raises(Undescribed, match="--count"):
        reference_pages.cli_reference(typer.main.get_command(app))


def test_every_cli_option_of_servectl_is_in_the_reference() -> None:

    text = reference_pages.render("cli")
    for option in ("--smoke", "--max-replicas", "--admin-key", "--stream", "--write-spec", "--watch"):
        assert f"`{option}" in text, option
