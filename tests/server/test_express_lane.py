"""The express lane's wiring in servectl's HTTP protocol, on a real uvicorn server with raw
sockets: a request whose whole body came with its head is offered to the lane (no task),
anything else goes to the app's task, and HTTP/1.1's order and disconnects hold across
both (`http.Connection`, `express.ExpressLane` is the real lane)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from servectl.server.asgi import Receive, Scope, Send, answer_headers, read_body, send_bytes
from servectl.server.http import Cycle, connection_class
from servectl.server.http.limits import ConnectionLimits

from support.servers import protocol_server

app_paths: list[str] = []  # the requests the app's task was started for


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The task path: echoes the body, marked as the app's."""
    if scope["type"] != "http":
        return
    app_paths.append(scope["path"])
    body = await read_body(receive, 1 << 20)
    assert body is not None
    await send_bytes(send, 200, b"app:" + body, "rid")


class Lane:
    """Takes POSTs to /lane (echoed, marked as the lane's), after `delay_s` for /lane/slow;
    leaves everything else to the app."""

    def __init__(self) -> None:
        self.taken: list[Cycle] = []

    def take(self, cycle: Cycle) -> bool:
        if not cycle.scope["path"].startswith("/lane"):
            return False
        self.taken.append(cycle)
        body = cycle.whole_body()
        assert body is not None
        answer = b"lane:" + body
        delay = 0.3 if cycle.scope["path"] == "/lane/slow" else 0.0
        loop = asyncio.get_running_loop()
        loop.call_later(delay, cycle.send_whole, 200, answer_headers(answer, "rid"), answer)
        return True


@contextlib.asynccontextmanager
async def serving(lane: Lane) -> AsyncIterator[int]:
    async with protocol_server(app, connection_class(ConnectionLimits(), lane)) as port:
        app_paths.clear()
        yield port


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


def post(path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (path.encode(), len(body), body)


async def answers(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """The bodies of `count` answers."""
    out = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if b"content-length" in line)
        out.append(await reader.readexactly(length))
    return out


def test_a_request_whole_in_one_read_is_taken_by_the_lane_without_a_task() -> None:
    async def test() -> None:
        lane = Lane()
        async with serving(lane) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/lane", b"one"))
            assert await answers(reader, 1) == [b"lane:one"]
            writer.write(post("/other", b"two"))  # the lane leaves it: the app's task answers
            assert await answers(reader, 1) == [b"app:two"]
            writer.close()
        assert len(lane.taken) == 1 and lane.taken[0].scope["method"] == "POST"
        assert app_paths == ["/other"]  # no task was started for the lane's request

    run(test)


def test_a_body_that_comes_after_its_head_goes_to_the_task() -> None:
    async def test() -> None:
        lane = Lane()
        async with serving(lane) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            raw = post("/lane", b"later")
            head, body = raw.split(b"\r\n\r\n")
            writer.write(head + b"\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)  # the head is read alone
            writer.write(body)
            assert await answers(reader, 1) == [b"app:later"]
            writer.close()
        assert lane.taken == [] and app_paths == ["/lane"]

    run(test)


def test_pipelined_requests_keep_their_order_across_the_lane_and_the_task() -> None:
    async def test() -> None:
        lane = Lane()
        async with serving(lane) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # the first is taken by the lane and answered 0.3 s later; the two behind it wait
            writer.write(post("/lane/slow", b"1") + post("/other", b"2") + post("/lane", b"3"))
            assert await answers(reader, 3) == [b"lane:1", b"app:2", b"app:3"]  # pipelined: the task path
            writer.close()
        assert [c.scope["path"] for c in lane.taken] == ["/lane/slow"] and app_paths == ["/other", "/lane"]

    run(test)


def test_a_client_leaving_is_seen_by_a_request_the_lane_holds() -> None:
    async def test() -> None:
        lane = Lane()
        async with serving(lane) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/lane/slow", b"gone"))
            await writer.drain()
            for _ in range(100):
                if lane.taken:
                    break
                await asyncio.sleep(0.01)
            writer.close()
            for _ in range(100):
                if lane.taken[0].disconnected:
                    break
                await asyncio.sleep(0.01)
            assert lane.taken[0].disconnected  # the endpoint's watch and the answer see it
            await asyncio.sleep(0.4)  # the lane's late answer to a closed connection writes nothing
            assert not lane.taken[0].response_complete

    run(test)
