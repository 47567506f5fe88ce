"""Structured outputs: what a request asks its text to be, as the constraint the token engine
decodes under (runners/grammar.py) and the `response_format` a custom `complete` receives.

OpenAI's `response_format` (`text`, `json_object`, `json_schema` with `strict`), servectl's
`{"type": "regex", "regex": ...}`, and vLLM's extensions: `guided_json`, `guided_regex`,
`guided_choice`, `guided_grammar` (Lark or GBNF) and the newer `structured_outputs: {json,
regex, choice, grammar, json_object}`. One constraint per request: two are a 400 naming the
second. A schema with `strict: true` must be enforced whole (a keyword the engine cannot
enforce is a 400); otherwise such keywords are left out, as vLLM's engines do.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from servectl.sdk import Constraint, InvalidInput, ResponseFormat, Sampling

_FORMATS = "`text`, `json_object`, `json_schema` or `regex`"


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`: one of its fields."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    json_schema: dict[str, Any] | str | None = Field(None, alias="json", description="A JSON schema (or its text).")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = Field(None, description="A Lark or GBNF grammar.")
    json_object: bool | None = Field(None, description="true: any JSON object.")


class StructuredFields(BaseModel):
    """The request fields that constrain the text (chat and completions)."""

    response_format: dict[str, Any] | None = Field(
        None,
        description='`{"type": "text"}`, `{"type": "json_object"}`, `{"type": "json_schema", "json_schema": '
        '{"name", "schema", "strict"}}`, or servectl\'s `{"type": "regex", "regex": "..."}`: the text is decoded '
        "under a grammar, so it always parses (unless cut by max_tokens).",
    )
    guided_json: dict[str, Any] | str | None = Field(None, description="Extension (vLLM): a JSON schema to follow.")
    guided_regex: str | None = Field(None, description="Extension (vLLM): a regex the text matches.")
    guided_choice: list[str] | None = Field(None, description="Extension (vLLM): the text is one of these.")
    guided_grammar: str | None = Field(None, description="Extension (vLLM): a Lark or GBNF grammar.")
    structured_outputs: StructuredOutputs | None = Field(
        None, description="Extension (vLLM): `{json | regex | choice | grammar | json_object}`, one of them."
    )


_PLAIN: tuple[Literal["regex", "choice", "grammar"], ...] = ("regex", "choice", "grammar")  # taken as given


def structured_of(request: StructuredFields) -> tuple[ResponseFormat | None, Constraint | None]:
    """The request's response format and the constraint it decodes under (None: free text)."""
    found: list[Constraint] = []
    response_format = None
    if request.response_format is not None:
        response_format, constraint = _response_format(request.response_format)
        found += [constraint] if constraint else []
    if request.guided_json is not None:
        found.append(Constraint("json", _schema(request.guided_json, "guided_json"), "guided_json", strict=False))
    for kind in _PLAIN:  # vLLM's guided_* fields
        if getattr(request, f"guided_{kind}") is not None:
            found.append(Constraint(kind, getattr(request, f"guided_{kind}"), f"guided_{kind}"))
    so = request.structured_outputs
    if so is not None:
        if so.json_schema is not None:
            schema = _schema(so.json_schema, "structured_outputs.json")
            found.append(Constraint("json", schema, "structured_outputs.json", strict=False))
        for kind in _PLAIN:
            if getattr(so, kind) is not None:
                found.append(Constraint(kind, getattr(so, kind), f"structured_outputs.{kind}"))
        if so.json_object:
            found.append(Constraint("json", {"type": "object"}, "structured_outputs.json_object"))
    if len(found) > 1:
        raise InvalidInput(
            f"one structured output per request: `{found[0].param}` and `{found[1].param}` both given",
            found[1].param,
            status=400,
        )
    return response_format, (found[0] if found else None)


def apply_structured(request: StructuredFields, sampling: Sampling) -> None:
    sampling.response_format, sampling.constraint = structured_of(request)


def _response_format(value: dict[str, Any]) -> tuple[ResponseFormat, Constraint | None]:
    kind = value.get("type")
    if kind == "text":
        return ResponseFormat("text"), None
    if kind == "json_object":
        return ResponseFormat("json_object"), Constraint("json", {"type": "object"}, "response_format")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidInput(
                "json_schema must be an object with `name` and `schema`", "response_format.json_schema", 400
            )
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput("a json_schema needs a `name`", "response_format.json_schema.name", 400)
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise InvalidInput("the schema must be a JSON object", "response_format.json_schema.schema", 400)
        strict = spec.get("strict") is True
        fmt = ResponseFormat("json_schema", schema=schema, name=name, strict=strict)
        return fmt, Constraint("json", schema, "response_format.json_schema.schema", strict=strict)
    if kind == "regex":
        regex = value.get("regex")
        if not isinstance(regex, str) or not regex:
            raise InvalidInput("a regex format needs `regex`: the pattern", "response_format.regex", 400)
        return ResponseFormat("regex", regex=regex), Constraint("regex", regex, "response_format.regex")
    raise InvalidInput(f"response_format type {kind!r} is not served; one of {_FORMATS}", "response_format.type", 400)


def _schema(value: dict[str, Any] | str, param: str) -> dict[str, Any]:
    """A schema given as an object or as its JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInput(f"not a JSON schema: {exc}", param, status=400) from exc
    if not isinstance(value, dict):
        raise InvalidInput("a JSON schema must be an object", param, status=400)
    return value
