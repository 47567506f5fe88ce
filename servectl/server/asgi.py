"""Small raw-ASGI helpers for the lean model path: headers in, bytes out."""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from servectl.server.encoding import BodyTooLarge, Inflater

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"
_UNSAFE_ID = re.compile(rb"[^A-Za-z0-9._:\-]")
MAX_REQUEST_ID = 64


_ID_PREFIX = secrets.token_hex(4)
_id_counter = itertools.count(1)


def request_id_from(raw: bytes | None) -> str:
    """A client's X-Request-Id, sanitised and length-capped, or a fresh one (unique per process
    start: a random prefix and a counter, cheaper than reading the OS's randomness each time)."""
    if raw:
        clean = _UNSAFE_ID.sub(b"", raw[:MAX_REQUEST_ID])
        if clean:
            return clean.decode("ascii")
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


def answer_headers(
    body: bytes, request_id: str, extra: list[tuple[bytes, bytes]] | None = None, content_type: bytes = JSON
) -> list[tuple[bytes, bytes]]:
    """The headers of an answer servectl builds itself."""
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if extra:
        headers.extend(extra)
    return headers


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    extra: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = JSON,
) -> None:
    headers = answer_headers(body, request_id, extra, content_type)
    # servectl's own HTTP protocol writes such an answer at once (`http.Cycle`);
    # any other server, or a `send` wrapped to add headers, gets the two ASGI messages
    send_whole = getattr(getattr(send, "__self__", None), "send_whole", None)
    if send_whole is not None and send_whole(status, headers, body):
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def adding_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """`send`, adding `headers` (as they are when the answer starts) to the answer."""

    async def send_with(message: Message) -> None:
        if message["type"] == "http.response.start" and headers:
            message["headers"] = [*message.get("headers", []), *headers]
        await send(message)

    return send_with


async def read_body(receive: Receive, limit: int, inflater: Inflater | None = None) -> bytes | None:
    """The whole request body, or None if the client went away while sending it; with an
    `inflater` (its `Content-Encoding`), inflated as it comes, `limit` counting both the
    bytes received and the inflated ones."""
    whole_body: Callable[[], bytes | None] | None = getattr(getattr(receive, "__self__", None), "whole_body", None)
    if whole_body is not None and (body := whole_body()) is not None:  # `http.Cycle`
        if len(body) > limit:
            raise BodyTooLarge
        if inflater is not None:
            body = inflater.feed(body)
            inflater.end()
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk if inflater is None else inflater.feed(chunk))
        if not message.get("more_body", False):
            if inflater is not None:
                inflater.end()
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
