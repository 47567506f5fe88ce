"""How an answer leaves a connection: whole, in one write.

`WholeCycle` is uvicorn's request-response cycle that writes a whole answer of known
length at once; `CorkedWrites` holds the head of an answer that uvicorn's own `send`
writes, until its body comes. Both exist because a send syscall per piece was a third of
the API process's time on small answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

JOIN_BELOW = 64 * 1024  # a held head is joined to a body this small; a larger one goes out beside it


def write_joined(transport: asyncio.Transport, head: list[bytes], body: bytes) -> None:
    """A head (in pieces) and its body in one write: joined when the body is small, side by
    side (one writev) when copying it to join would cost more than it saves."""
    if len(body) <= JOIN_BELOW:
        head.append(body)
        transport.write(b"".join(head))
    else:
        transport.writelines((b"".join(head), body))


class CorkedWrites:
    """A connection's transport as its responses see it: the head of a response with a
    known, non-empty length is held until its body and both go out in one write, one send
    syscall instead of two (they were a third of the API process's time on small answers).
    Everything else is written at once; what is held is flushed before a close."""

    __slots__ = ("cycle", "headed", "held", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held: bytes | None = None
        self.cycle: Any = None  # the newest response cycle (uvicorn's RequestResponseCycle)
        self.headed: Any = None  # the cycle whose first write was seen

    def write(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            self.held = None
            write_joined(self.transport, [held], data)
            return
        cycle = self.cycle
        if cycle is not None and cycle is not self.headed:
            self.headed = cycle  # its first write: the head (a 100 Continue comes before the start: never held)
            if (
                cycle.response_started
                and cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"  # its body is never written: nothing to wait for
            ):
                self.held = data
                return
        self.transport.write(data)

    def close(self) -> None:
        if self.held is not None:
            self.transport.write(self.held)
            self.held = None
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class WholeCycle(RequestResponseCycle):
    """uvicorn's request-response cycle that also hands over a body that is all in
    (`whole_body`) and writes a whole answer of known length at once (`send_whole`): what
    its `receive` and two `send` calls do for them (status line, headers, body, keep-alive,
    the next pipelined request) without the ASGI messages, three awaits and a pattern check
    per header. The answers servectl builds itself are its hot path: `asgi.read_body` and
    `asgi.send_bytes` call these when `receive` / `send` are this cycle's own."""

    def whole_body(self) -> bytes | None:
        """The request's whole body when all of it is in, as `receive` would give it in one
        message (None: not yet, or the ASGI path must take it)."""
        if self.more_body or self.disconnected or self.response_complete or self.waiting_for_100_continue:
            return None
        body = bytes(self.body)
        self.body = bytearray()
        self.flow.resume_reading()  # as `receive` does: a large body may have paused reading
        return body

    def send_whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """Write the answer; False (nothing done) where the ASGI path must take it: an answer
        already started, a paused write (the ASGI path waits for the drain), a HEAD request."""
        if self.response_started or self.flow.write_paused or self.scope["method"] == "HEAD":
            return False
        if self.disconnected:  # as `send` does: nothing to write to
            return True
        self.response_started = True
        self.waiting_for_100_continue = False
        self.chunked_encoding = False
        head = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            head += (name, b": ", value, b"\r\n")
        closing = False  # the answer says so itself
        for name, value in headers:
            if name == b"connection" and b"close" in value.lower():
                self.keep_alive, closing = False, True
            head += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not closing:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        write_joined(self.transport, head, body)
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
        return True
