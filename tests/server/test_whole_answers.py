"""Whole answers: servectl's HTTP protocol hands a body that is all in over at once and
writes a known-length answer in one go (`Cycle`), on a real uvicorn server with raw
sockets, so HTTP/1.1's rules (pipelining, keep-alive, close, HEAD) hold on that path too."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from servectl.server.asgi import Receive, Scope, Send, adding_headers, read_body, send_bytes
from servectl.server.http import connection_class
from servectl.server.limits import ConnectionLimits

from conftest import protocol_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving(ConnectionLimits()) as free:
        yield free


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


async def test_pipelined_requests_are_answered_in_order_on_a_kept_connection(port: int) -> None:
    answers, closed = await exchange(port, post("/a", b"one") + post("/b", b"two") + post("/c", b"3"), 3)
    assert [a.split(b"\r\n\r\n")[1] for a in answers] == [b"one", b"two", b"3"]
    for answer, rid in zip(answers, [b"rid-a", b"rid-b", b"rid-c"], strict=True):
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 200 ok")
        assert b"x-request-id: " + rid in head and b"date: " in head and b"content-type: application/json" in head
        assert b"connection: close" not in head
    assert not closed
    assert seen == [True, True, True]  # all three took the whole-answer path


async def test_close_is_honoured_whoever_asks(port: int) -> None:
    answers, closed = await exchange(port, post("/a", b"x", b"connection: close\r\n"), 1)
    assert b"connection: close" in answers[0].lower() and closed  # the client asked
    answers, closed = await exchange(port, post("/a", b"x", version=b"1.0"), 1)
    assert b"connection: close" in answers[0].lower() and closed  # HTTP/1.0
    answers, closed = await exchange(port, post("/close", b"x") + post("/a", b"never"), 1)
    assert answers[0].lower().count(b"connection: close") == 1 and closed  # the app asked
    assert seen == [True, True, True]


async def test_a_wrapped_send_and_head_take_the_asgi_path(port: int) -> None:
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


async def test_a_body_sent_in_pieces_is_read_whole(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"world")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"content-length: 10" in head.lower() and await reader.readexactly(10) == b"helloworld"
    writer.close()


async def test_one_clock_times_heads_and_idleness_across_many_requests() -> None:
    """The connection's one clock: a connection in use for several keep-alive periods stays
    open; idle, it closes after keep_alive_s; a head started and never ended gets its 408."""
    async with serving(ConnectionLimits(header_timeout_s=5, keep_alive_s=0.4)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(8):  # 8 x 0.25 s: five keep-alive periods, never idle for one
            writer.write(post("/a", b"%d" % i))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(1) == b"%d" % i
            await asyncio.sleep(0.25)
        idle_from = time.monotonic()
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # idle: closed, silently
        assert 0.1 < time.monotonic() - idle_from < 2  # ~0.15 s left of its keep-alive, not the head's 5 s
        writer.close()

    async with serving(ConnectionLimits(header_timeout_s=0.6, keep_alive_s=5)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/a", b"x"))
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await reader.readexactly(1)
        await asyncio.sleep(0.3)  # idle, shorter than keep_alive_s
        writer.write(b"POST /a HTTP/1.1\r\nhost: x\r\n")  # a head that never ends
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(65536), 5)
        assert answer.startswith(b"HTTP/1.1 408") and b"header_timeout_s" in answer
        assert 0.4 < time.monotonic() - started < 2
        writer.close()
