"""A route several models share, in-process (the edge as uvicorn runs it, with fake ASGI
messages): what a body that names no served model, a malformed one, a huge one or one that
never finishes arriving gets, before any worker is involved."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import yaml

from servectl.processes.deployment import Deployment
from servectl.server.app import build_app
from servectl.server.edge import build_edge
from servectl.spec import load_deployment

ROOT = Path(__file__).resolve().parents[2]


def edge(tmp_path: Path) -> Any:
    entry = {
        "model": {"backend": "python"},
        "handler": str(ROOT / "handlers" / "echo_llm.py"),
        "api": {"kind": "openai"},
        "limits": {"timeout_s": 0.3, "max_body_mb": 0.001},
    }
    spec = {"models": [{**entry, "name": "a"}, {**entry, "name": "b", "limits": {"timeout_s": 0.2}}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    deployment = Deployment(load_deployment([path]), plan=lambda _spec: ([], "cpu"))
    return build_edge(deployment, build_app(deployment))


def post(app: Any, chunks: list[bytes], hang: bool = False) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    """POST /v1/chat/completions with the body in `chunks`; `hang`: the rest never comes."""
    sent: list[dict[str, Any]] = []
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending) or hang}
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "extensions": {}}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    start, body = sent[0], sent[1]
    return start["status"], orjson.loads(body["body"]), dict(start["headers"])


def test_the_body_names_a_served_model_or_gets_an_openai_error(tmp_path: Path) -> None:
    app = edge(tmp_path)
    status, body, _ = post(app, [b'{"model": "c", "messages": []}'])
    assert status == 404 and body["error"]["code"] == "model_not_found" and "serves: a, b" in body["error"]["message"]
    status, body, _ = post(app, [b'{"messages": []}'])
    assert status == 400 and "'model' is required" in body["error"]["message"]
    assert body["error"]["param"] == "body.model"
    status, body, _ = post(app, [b'{"model": "a", '])
    assert status == 400 and body["error"]["message"].startswith("malformed JSON")
    status, body, _ = post(app, [b'{"model": "a", "messages": ["' + b"x" * 600, b"x" * 600 + b'"]}'])
    assert status == 413 and "1048 bytes" in body["error"]["message"]


def test_a_body_still_arriving_at_the_deadline_gets_504_and_a_closed_connection(tmp_path: Path) -> None:
    status, body, headers = post(edge(tmp_path), [b'{"model": "a", '], hang=True)
    assert status == 504 and "limits.timeout_s=0.3s" in body["error"]["message"]  # the longest of the route's models
    assert headers[b"connection"] == b"close"
