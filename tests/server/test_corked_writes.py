"""A connection's answers leave in as few writes as they can: a known-length response
sent through ASGI's two messages is one write (its head waits for its body)."""

from __future__ import annotations

import asyncio

from servectl.server.http.cycle import Cycle
from servectl.server.http.flow import Flow


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.writes.append(b"|".join(parts))  # one call: what a writev sends

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def answer(
    transport: Transport, headers: list[tuple[bytes, bytes]], *bodies: bytes, method: str = "POST", status: int = 200
) -> None:
    """Send a response through the cycle's ASGI `send`: its start, then each body message."""
    cycle = Cycle({"method": method}, transport, Flow(transport), [], True, False, lambda: None)  # type: ignore[arg-type]

    async def run() -> None:
        await cycle.send({"type": "http.response.start", "status": status, "headers": headers})
        for i, body in enumerate(bodies):
            await cycle.send({"type": "http.response.body", "body": body, "more_body": i < len(bodies) - 1})

    asyncio.run(run())
    assert cycle.response_complete


def test_a_known_length_answer_is_one_write_streams_and_empty_bodies_are_not_held() -> None:
    sent = Transport()
    answer(sent, [(b"content-length", b"7")], b'{"y":9}')
    assert sent.writes == [b'HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{"y":9}']
    sent.writes.clear()
    answer(sent, [], b"chunk", b"")  # no length (a stream): its head goes at once, then chunks
    assert sent.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", b"5\r\nchunk\r\n", b"0\r\n\r\n"]
    sent.writes.clear()
    answer(sent, [(b"content-length", b"0")], b"", status=204)  # no body: nothing to wait for
    assert sent.writes == [b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"]
    sent.writes.clear()
    big = b"x" * (2**20)
    answer(sent, [(b"content-length", str(len(big)).encode())], big)  # a large body is not copied to join
    assert sent.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n|" + big]
    sent.writes.clear()
    answer(sent, [(b"content-length", b"5")], b"hello", method="HEAD")  # a HEAD answer's body is never written
    assert sent.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"]
    sent.writes.clear()
    answer(sent, [(b"content-length", b"5")], b"", b"hello")  # an empty first piece: the head goes, then the rest
    assert sent.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"hello"]


def test_headers_that_would_inject_are_refused() -> None:
    sent = Transport()
    for bad in ([(b"x-a", b"1\r\nx-b: 2")], [(b"x a", b"1")]):
        try:
            answer(sent, bad, b"")
        except RuntimeError as exc:
            assert "invalid HTTP header" in str(exc)
        else:
            raise AssertionError(f"{bad} was written")
    assert sent.writes == []
