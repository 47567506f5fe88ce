"""The connection's one timer for the head and keep-alive deadlines, on a fake loop:
time moves only when the test says, so no test here sleeps. First the clock alone, then
as servectl's connection (`http.Connection`) winds it, fed raw bytes on a fake transport."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from servectl.server.asgi import Receive, Scope, Send, read_body, send_bytes
from servectl.server.http import connection_class
from servectl.server.http.clock import ConnectionClock
from servectl.server.http.connection import LINGER_S
from servectl.server.http.limits import ConnectionLimits

from support.fakeloop import FakeLoop, Transport


def clock() -> tuple[FakeLoop, ConnectionClock, list[str]]:
    loop, fired = FakeLoop(), []
    return loop, ConnectionClock(loop, lambda: fired.append("head"), lambda: fired.append("idle")), fired  # type: ignore[arg-type]


def test_a_late_head_fires_once_at_its_deadline() -> None:
    loop, c, fired = clock()
    c.head_from_now(10)
    loop.advance(9.9)
    assert fired == []
    loop.advance(0.2)
    assert fired == ["head"] and c.head_due is None and loop.armed() == []


def test_a_head_that_arrives_in_time_fires_nothing() -> None:
    loop, c, fired = clock()
    c.head_from_now(10)
    loop.advance(3)
    c.head_due = None  # the head is in (what on_headers_complete does: no timer touched)
    loop.advance(20)
    assert fired == [] and loop.armed() == []


def test_keep_alive_closes_an_idle_connection_and_new_bytes_keep_it() -> None:
    loop, c, fired = clock()
    c.idle_from_now(5)
    loop.advance(4)
    c.idle_due = None  # bytes came: not idle
    c.head_from_now(10)
    loop.advance(5)
    assert fired == []  # the timer fired at 5 s for nothing, and wound itself on to the head's deadline
    assert loop.armed() == [14]
    loop.advance(5)
    assert fired == ["head"]


def test_one_timer_for_many_requests() -> None:
    """Answers on a kept-alive connection move a float, not the loop's timers."""
    loop, c, fired = clock()
    c.idle_from_now(5)
    for _ in range(100):  # a request and its answer every 10 ms
        loop.advance(0.01)
        c.idle_due = None
        c.head_from_now(10)
        c.head_due = None
        c.idle_from_now(5)
    assert len(loop.handles) <= 3 and fired == []
    loop.advance(5)
    assert fired == ["idle"]


def test_stop_disarms() -> None:
    loop, c, fired = clock()
    c.head_from_now(1)
    c.idle_from_now(2)
    c.stop()
    loop.advance(10)
    assert fired == [] and loop.armed() == []


# -- the clock as the connection winds it -------------------------------------------------


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive, 1 << 20)
    assert body is not None
    await send_bytes(send, 200, body, "rid")


def post(body: bytes) -> bytes:
    return b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


class Conn:
    """One connection of servectl's protocol on the fake loop: the app's tasks run on the
    test's real loop, every timer is the fake loop's."""

    def __init__(self, header_timeout_s: float, keep_alive_s: float) -> None:
        self.loop = FakeLoop()
        limits = ConnectionLimits(header_timeout_s=header_timeout_s, keep_alive_s=keep_alive_s)
        config = uvicorn.Config(echo, log_config=None, lifespan="off", ws="none", http=connection_class(limits, None))
        config.load()
        self.protocol: Any = config.http_protocol_class(
            config=config, server_state=ServerState(), app_state={}, _loop=self.loop
        )
        self.transport = Transport()
        self.protocol.connection_made(self.transport)

    @property
    def written(self) -> bytes:
        return self.transport.written

    @property
    def closed(self) -> bool:
        return self.transport.closing

    async def send(self, data: bytes) -> bytes:
        """Bytes in; once the app's tasks are done, the bytes written meanwhile."""
        before = len(self.written)
        self.protocol.data_received(data)
        for _ in range(100):
            if not self.protocol.tasks:
                break
            await asyncio.sleep(0)
        assert not self.protocol.tasks, "the app did not answer"
        return self.written[before:]


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 10))


def test_a_connection_in_use_stays_open_and_idle_closes_at_keep_alive_s() -> None:
    """In use for several keep-alive periods, a connection stays open, on one timer; idle, it
    closes keep_alive_s after its last answer, silently, not at the head's deadline."""

    async def scenario() -> None:
        c = Conn(header_timeout_s=5, keep_alive_s=0.4)
        for i in range(8):  # 8 x 0.25 s: five keep-alive periods, never idle for one
            answer = await c.send(post(b"%d" % i))
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n%d" % i)
            assert len(c.loop.armed()) == 1  # one timer for the connection, however many requests
            c.loop.advance(0.25)
            assert not c.closed
        written = c.written
        c.loop.advance(0.14)  # idle 0.39 s: ~0.15 s was left of its keep-alive
        assert not c.closed
        c.loop.advance(0.02)
        assert c.closed and c.written == written and not c.transport.eof_written  # closed, silently
        assert c.loop.armed() == []

    run(scenario())


def test_a_request_arriving_ends_idleness_and_its_answer_starts_it_again() -> None:
    async def scenario() -> None:
        c = Conn(header_timeout_s=5, keep_alive_s=0.4)
        assert (await c.send(post(b"1"))).startswith(b"HTTP/1.1 200")
        c.loop.advance(0.3)  # idle, shorter than keep_alive_s
        raw = post(b"2")
        assert await c.send(raw[:10]) == b""  # a request begins: no longer idle
        c.loop.advance(0.2)  # past the idle deadline: the head's 5 s apply now
        assert not c.closed and c.loop.armed() == [0.3 + 5]  # the head's deadline, from its first bytes
        answer = await c.send(raw[10:])
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n2")
        c.loop.advance(0.39)  # idleness counts again, from this answer
        assert not c.closed
        c.loop.advance(0.02)
        assert c.closed and c.written.endswith(b"\r\n\r\n2")

    run(scenario())


def test_a_head_not_complete_by_header_timeout_s_gets_its_408_and_the_close() -> None:
    """A head started and never ended: a 408 at header_timeout_s from its first bytes (not
    from the answer before it, nor at keep_alive_s), then the close once the client has had
    LINGER_S to read it."""

    async def scenario() -> None:
        c = Conn(header_timeout_s=0.6, keep_alive_s=5)
        assert (await c.send(post(b"x"))).startswith(b"HTTP/1.1 200")
        c.loop.advance(0.3)  # idle, shorter than keep_alive_s
        before = len(c.written)
        await c.send(b"POST /a HTTP/1.1\r\nhost: x\r\n")  # a head that never ends
        c.loop.advance(0.59)
        assert c.written[before:] == b"" and not c.closed
        c.loop.advance(0.02)
        answer = c.written[before:]
        assert answer.startswith(b"HTTP/1.1 408") and b"header_timeout_s" in answer
        assert b"connection: close" in answer.lower() and c.transport.eof_written
        assert not c.closed  # lingering: what the client still sends is read and dropped
        assert c.loop.armed() == [c.loop.now + LINGER_S]
        c.loop.advance(LINGER_S)
        assert c.closed and c.written[before:] == answer

    run(scenario())


def test_a_connection_that_sends_nothing_closes_at_header_timeout_s_without_an_answer() -> None:
    async def scenario() -> None:
        c = Conn(header_timeout_s=0.6, keep_alive_s=5)
        c.loop.advance(0.59)
        assert not c.closed
        c.loop.advance(0.02)
        assert c.closed and c.written == b""  # no request began: nothing to answer

    run(scenario())
