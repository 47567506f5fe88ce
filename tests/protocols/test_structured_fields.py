"""Which constraint a request's structured-output fields ask for, without a server: each of
vLLM's spellings names its own `param`, and two at once are a 400 naming the second."""

from __future__ import annotations

import pytest

from servectl.protocols.openai.structured import StructuredFields, structured_of
from servectl.sdk import InvalidInput


@pytest.mark.parametrize(
    ("body", "kind", "param"),
    [
        ({"guided_regex": "a+"}, "regex", "guided_regex"),
        ({"guided_choice": ["x", "y"]}, "choice", "guided_choice"),
        ({"guided_grammar": 'start: "a"'}, "grammar", "guided_grammar"),
        ({"guided_json": {"type": "object"}}, "json", "guided_json"),
        ({"structured_outputs": {"regex": "b"}}, "regex", "structured_outputs.regex"),
        ({"structured_outputs": {"choice": ["p"]}}, "choice", "structured_outputs.choice"),
        ({"structured_outputs": {"json": {"type": "object"}}}, "json", "structured_outputs.json"),
        ({"structured_outputs": {"json_object": True}}, "json", "structured_outputs.json_object"),
        ({"response_format": {"type": "json_object"}}, "json", "response_format"),
    ],
)
def test_each_spelling_gives_its_constraint(body: dict[str, object], kind: str, param: str) -> None:
    _, constraint = structured_of(StructuredFields.model_validate(body))
    assert constraint is not None and (constraint.kind, constraint.param) == (kind, param)


def test_free_text_has_no_constraint() -> None:
    assert structured_of(StructuredFields.model_validate({"response_format": {"type": "text"}}))[1] is None


def test_two_constraints_are_refused_naming_the_second() -> None:
    body = {"guided_regex": "a", "structured_outputs": {"choice": ["x"]}}
    with pytest.raises(InvalidInput) as refused:
        structured_of(StructuredFields.model_validate(body))
    assert refused.value.field == "structured_outputs.choice" and refused.value.status == 400
