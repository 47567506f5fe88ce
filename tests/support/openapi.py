"""Reading a served OpenAPI document."""

from __future__ import annotations


def resolved(document: dict, node: dict) -> dict:
    """An OpenAPI schema with its `$ref` to a component followed."""
    ref = node.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else node
