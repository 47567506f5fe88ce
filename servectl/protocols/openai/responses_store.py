"""Stored Responses, in the API process: `store` (true by default, as OpenAI) keeps a
response; `previous_response_id` continues from one, its input and output before the new
input. Workers never see the store: `ResponsesRelay.prepare` writes the history into the
body's `input` before the request is queued, and the answer (a whole Response, or a stream's
`response.completed` / `response.incomplete` event) is kept once it is sent.

The store is bounded: at most `MAX_RESPONSES` (1024) responses and `MAX_BYTES` (64 MiB of
JSON: each kept response and its history) per API process, the least recently used going
first. Each API process keeps its own (with `server.api_processes` > 1, a response is found
only by the process that answered it), and a restart forgets them all. An id that is unknown,
evicted or was answered with `store: false` is a 400 naming `previous_response_id`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from servectl.outcome import Failure
from servectl.protocols.base import Relayed

MAX_RESPONSES = 1024
MAX_BYTES = 64 * 2**20
_DONE = (b'{"type":"response.completed"', b'{"type":"response.incomplete"')


@dataclass(slots=True)
class Stored:
    """A kept response: its body (as `GET /v1/responses/{id}` answers it), the model that
    answered, and the history a response continuing from it starts with."""

    body: bytes
    model: str
    history: bytes  # JSON: the input items it was given (with their own history), then its output
    size: int


class ResponseStore:
    """The responses this process keeps (LRU: see the module's bounds)."""

    def __init__(self, max_responses: int = MAX_RESPONSES, max_bytes: int = MAX_BYTES) -> None:
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[str, Stored] = OrderedDict()

    def get(self, response_id: str) -> Stored | None:
        found = self.entries.get(response_id)
        if found is not None:
            self.entries.move_to_end(response_id)
        return found

    def put(self, response_id: str, stored: Stored) -> None:
        self.delete(response_id)
        self.entries[response_id] = stored
        self.bytes += stored.size
        while len(self.entries) > self.max_responses or self.bytes > self.max_bytes:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= dropped.size

    def delete(self, response_id: str) -> bool:
        dropped = self.entries.pop(response_id, None)
        if dropped is not None:
            self.bytes -= dropped.size
        return dropped is not None


STORE = ResponseStore()
"""This API process's stored responses (every model's `/v1/responses` and its GET route)."""


class ResponsesRelay:
    """The API side of `/v1/responses` for one model: history in, responses kept."""

    def __init__(self, store: ResponseStore, model: str) -> None:
        self.store = store
        self.model = model

    def prepare(self, body: bytes) -> Relayed | Failure:
        """The body with a previous response's history in its `input`; the 400 when that
        response is not kept. A body that is not a JSON object goes on as it is: the
        worker's validation names what is wrong with it."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Relayed(body, None)
        if not isinstance(request, dict):
            return Relayed(body, None)
        given = request.get("input", [])
        items: Any = [{"role": "user", "content": given}] if isinstance(given, str) else given
        previous = request.get("previous_response_id")
        if isinstance(previous, str) and isinstance(items, list):
            stored = self.store.get(previous)
            if stored is None:
                return _not_found(previous)
            items = orjson.loads(stored.history) + items
            body = orjson.dumps({**request, "input": items})
        if request.get("store", True) is False or not isinstance(items, list):
            return Relayed(body, None)
        return Relayed(body, self._keeper(items))

    def _keeper(self, items: list[Any]) -> Callable[[bytes], None]:
        """What keeps the answer: given a whole Response, or each streamed event (the last
        carries the Response)."""

        def keep(answer: bytes) -> None:
            whole = answer.startswith(b'{"id":"resp_')
            if not whole and not answer.startswith(_DONE):
                return  # a stream's event before the last
            parsed = orjson.loads(answer)
            response = parsed if whole else parsed.get("response")
            if not isinstance(response, dict) or response.get("status") not in ("completed", "incomplete"):
                return
            history = orjson.dumps(items + response.get("output", []))
            body = answer if whole else orjson.dumps(response)
            self.store.put(response["id"], Stored(body, self.model, history, len(body) + len(history)))

        return keep


def _not_found(response_id: str) -> Failure:
    msg = f"Previous response with id '{response_id}' not found (never stored, stored with store: false, or evicted)."
    detail = [{"loc": ["previous_response_id"], "msg": msg, "type": "invalid_input"}]
    return Failure(400, "previous_response_not_found", msg, detail)
