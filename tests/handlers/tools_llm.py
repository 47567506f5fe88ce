"""An OpenAI-kind handler that calls tools itself: its `complete` reads the tools, tool_choice
and response format the request gave (`Sampling`) and answers with a `ToolCall`, whose
arguments report what it saw."""

from __future__ import annotations

import json
from collections.abc import Iterator

from servectl.sdk import Sampling, ToolCall


def complete(prompt: str, sampling: Sampling) -> Iterator[str | ToolCall]:
    if sampling.tools and sampling.tool_choice != "none":
        tool = next(t for t in sampling.tools if sampling.tool_name in (None, t.name))
        seen = {
            "tools": [t.name for t in sampling.tools],
            "choice": sampling.tool_choice,
            "named": sampling.tool_name,
            "parameters": tool.parameters,
        }
        yield ToolCall(tool.name, seen)
        return
    fmt = sampling.response_format
    if fmt is not None and fmt.type == "json_schema":
        yield json.dumps(
            {"name": fmt.name, "strict": fmt.strict, "keys": sorted((fmt.schema or {}).get("properties", {}))}
        )
        return
    yield "no tools"
