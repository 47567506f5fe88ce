"""Whole answers: servectl's HTTP protocol hands a body that is all in over at once and
writes a known-length answer in one go (`Cycle`), on a real uvicorn server with raw
sockets, so HTTP/1.1's rules (pipelining, keep-alive, close, HEAD) hold on that path too.
(The connection's timers, head deadline and keep-alive, are test_connection_clock.py's, on a
fake loop.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from servectl.server.asgi import Receive, Scope, Send, adding_headers, read_body, send_bytes
from servectl.server.http import connection_class
from servectl.server.http.limits import ConnectionLimits

from support.servers import protocol_server

seen: list[bool] = []  # per request: was `send` the cycle's own (the whole-answer path)?


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echoes the body; /close asks to close, /wrapped adds a header through a wrapped send."""
    if scope["type"] != "http":
        return
    body = await read_body(receive, 1 << 20)
    assert body is not None
    seen.append(hasattr(getattr(send, "__self__", None), "send_whole"))
    path = scope["path"]
    if path == "/wrapped":
        await send_bytes(adding_headers(send, [(b"x-added", b"1")]), 200, body, "rid")
    elif path == "/close":
        await send_bytes(send, 200, body, "rid", [(b"connection", b"close")])
    else:
        await send_bytes(send, 200, body, "rid-" + path.strip("/"))


@contextlib.asynccontextmanager
async def serving(limits: ConnectionLimits) -> AsyncIterator[int]:
    """The app on uvicorn with servectl's protocol, on a free 127.0.0.1 port."""
    async with protocol_server(app, connection_class(limits)) as port:
        seen.clear()
        yield port


def run(test: Callable[[int], Awaitable[None]]) -> None:
    """`test` with the port of the app served with the default limits."""

    async def served() -> None:
        async with serving(ConnectionLimits()) as port:
            await test(port)

    asyncio.run(asyncio.wait_for(served(), 20))


async def exchange(port: int, raw: bytes, answers: int) -> tuple[list[bytes], bool]:
    """Send `raw`, read `answers` responses (heads and bodies); True if the server then closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    out = []
    for _ in range(answers):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.lower().split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length"))
        out.append(head + await reader.readexactly(length))
    try:
        closed = await asyncio.wait_for(reader.read(1), 0.3) == b""
    except TimeoutError:
        closed = False
    writer.close()
    return out, closed


def post(path: str, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"POST %s HTTP/%s\r\nhost: x\r\ncontent-length: %d\r\n%s\r\n%s" % (
        path.encode(),
        version,
        len(body),
        extra,
        body,
    )


def test_pipelined_requests_are_answered_in_order_on_a_kept_connection() -> None:
    async def test(port: int) -> None:
        answers, closed = await exchange(port, post("/a", b"one") + post("/b", b"two") + post("/c", b"3"), 3)
        assert [a.split(b"\r\n\r\n")[1] for a in answers] == [b"one", b"two", b"3"]
        for answer, rid in zip(answers, [b"rid-a", b"rid-b", b"rid-c"], strict=True):
            head = answer.split(b"\r\n\r\n")[0].lower()
            assert head.startswith(b"http/1.1 200 ok")
            assert b"x-request-id: " + rid in head and b"date: " in head and b"content-type: application/json" in head
            assert b"connection: close" not in head
        assert not closed
        assert seen == [True, True, True]  # all three took the whole-answer path

    run(test)


def test_close_is_honoured_whoever_asks() -> None:
    async def test(port: int) -> None:
        answers, closed = await exchange(port, post("/a", b"x", b"connection: close\r\n"), 1)
        assert b"connection: close" in answers[0].lower() and closed  # the client asked
        answers, closed = await exchange(port, post("/a", b"x", version=b"1.0"), 1)
        assert b"connection: close" in answers[0].lower() and closed  # HTTP/1.0
        answers, closed = await exchange(port, post("/close", b"x") + post("/a", b"never"), 1)
        assert answers[0].lower().count(b"connection: close") == 1 and closed  # the app asked
        assert seen == [True, True, True]

    run(test)


def test_a_wrapped_send_and_head_take_the_asgi_path() -> None:
    async def test(port: int) -> None:
        answers, _ = await exchange(port, post("/wrapped", b"body"), 1)
        assert b"x-added: 1" in answers[0] and answers[0].endswith(b"body")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /a HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"content-length: 2" in head.lower()
        writer.write(post("/a", b"next"))  # no body came after the HEAD answer's head
        nxt = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert nxt.startswith(b"HTTP/1.1 200") and await reader.readexactly(4) == b"next"
        writer.close()

    run(test)


def test_a_body_sent_in_pieces_is_read_whole() -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"world")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"content-length: 10" in head.lower() and await reader.readexactly(10) == b"helloworld"
        writer.close()

    run(test)
