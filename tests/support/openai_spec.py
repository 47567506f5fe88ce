"""The official OpenAI answer schemas, to check what servectl's /v1 routes send.

`openai_schemas.json` beside this file holds the component schemas the /v1 answers use and
those they refer to, extracted (descriptions and examples dropped) from openapi.json of
github.com/openai/openai-openapi at the commit it names. Regenerate it with
`python tests/support/openai_spec.py COMMIT path/to/openapi.json`.

`validator(name)` checks a body against one component: `$ref`s resolve within the subset,
OpenAPI 3.0's `nullable: true` (which the document still mixes with 3.1's `null` types) also
admits null, and `RELAXED` lists where OpenAI's own answers differ from its document: each
relaxation is one named gap, nothing else is loosened.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

SUBSET = Path(__file__).with_name("openai_schemas.json")
ANSWERS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    # /v1/responses: the Response and the stream events servectl sends
    "Response",
    "ResponseCreatedEvent",
    "ResponseInProgressEvent",
    "ResponseCompletedEvent",
    "ResponseIncompleteEvent",
    "ResponseFailedEvent",
    "ResponseErrorEvent",
    "ResponseOutputItemAddedEvent",
    "ResponseOutputItemDoneEvent",
    "ResponseContentPartAddedEvent",
    "ResponseContentPartDoneEvent",
    "ResponseTextDeltaEvent",
    "ResponseTextDoneEvent",
    "ResponseFunctionCallArgumentsDeltaEvent",
    "ResponseFunctionCallArgumentsDoneEvent",
]
# each Responses stream event's component, by its `type`
RESPONSE_EVENTS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "error": "ResponseErrorEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
}
_DROP = {"description", "x-oaiMeta", "example", "examples", "title", "deprecated"}


def extract(document: dict[str, Any], commit: str) -> dict[str, Any]:
    """`ANSWERS` and every component they refer to, without prose."""
    schemas = document["components"]["schemas"]
    keep: dict[str, Any] = {}
    todo = list(ANSWERS)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep[name] = _strip(schemas[name])
            todo.extend(_refs(keep[name]))
    source = f"github.com/openai/openai-openapi openapi.json at commit {commit} (OpenAPI {document['openapi']})"
    return {
        "$comment": f"Extracted by tests/support/openai_spec.py from {source}",
        "schemas": dict(sorted(keep.items())),
    }


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in _DROP}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema: the schema, or null."""
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


def _or_null(node: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [node, {"type": "null"}]}


def _relax(schemas: dict[str, Any]) -> None:
    """Where OpenAI's answers (and its own clients' types) differ from the document."""
    completion = schemas["CreateCompletionResponse"]["properties"]["choices"]["items"]["properties"]
    # a streamed completion's chunks before the last have `finish_reason: null` (the document
    # says both shapes are one, and types finish_reason as a non-null enum)
    completion["finish_reason"] = _or_null(completion["finish_reason"])
    # `echo` with `logprobs`: the prompt's first token has no log-probability nor alternatives
    legacy = completion["logprobs"]["anyOf"][0]["properties"]
    legacy["token_logprobs"]["items"] = _or_null(legacy["token_logprobs"]["items"])
    legacy["top_logprobs"]["items"] = _or_null(legacy["top_logprobs"]["items"])
    # `encoding_format: base64`: the embedding is a base64 string of float32s
    embedding = schemas["Embedding"]["properties"]
    embedding["embedding"] = {"anyOf": [embedding["embedding"], {"type": "string"}]}


RELAXED = [
    "CreateCompletionResponse.choices[].finish_reason: null in a stream's chunks before the last",
    "CreateCompletionResponse.choices[].logprobs token_logprobs/top_logprobs: null for an echoed prompt's first token",
    "Embedding.embedding: a string with encoding_format base64",
]


def load() -> tuple[str, dict[str, Any]]:
    """The subset's source note, and its schemas in JSON Schema terms (relaxed as above)."""
    subset = json.loads(SUBSET.read_text())
    schemas = _nullable(copy.deepcopy(subset["schemas"]))
    _relax(schemas)
    return subset["$comment"], schemas


def validator(name: str, schemas: dict[str, Any]) -> Any:
    """A jsonschema validator of component `name` (2020-12: OpenAPI 3.1's dialect)."""
    from jsonschema import Draft202012Validator

    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
    return Draft202012Validator(root)


if __name__ == "__main__":
    commit, path = sys.argv[1], Path(sys.argv[2])
    SUBSET.write_text(json.dumps(extract(json.loads(path.read_text()), commit), indent=1) + "\n")
