"""One request and its answer on a connection: the ASGI `receive` and `send` of one request.

Besides the two ASGI callables, a cycle hands over a body that is all in at once
(`whole_body`) and writes a whole answer of known length in one write (`send_whole`): the
answers servectl builds itself are its hot path, and each ASGI message, await and
header check per answer cost time there. An answer sent through `send` with a known,
non-empty length also leaves in one write: its head is held until its body comes (a send
syscall per piece was a third of the API process's time on small answers).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

from servectl.protocols.predict.errors import error_body
from servectl.server.asgi import answer_headers, request_id_from
from servectl.server.http.flow import Flow

log = logging.getLogger("servectl")

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Any]

JOIN_BELOW = 64 * 1024  # a head is joined to a body this small; a larger one goes out beside it (writev)
_PHRASES = {status.value: status.phrase for status in HTTPStatus}
STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, _PHRASES.get(code, "").encode()) for code in range(100, 600)}
_BAD_NAME = re.compile(rb'[\x00-\x20\x7f()<>@,;:\\"/\[\]?={}]')  # not a token (RFC 9110 5.6.2)
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # no CR, LF or other controls: no header injection
_NO_BODY_STATUS = frozenset({204, 304})


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        raise RuntimeError(f"invalid HTTP status {status!r}")
    return line


def write_joined(transport: asyncio.Transport, head: list[bytes], body: bytes) -> None:
    """A head (in pieces) and its body in one write: joined when the body is small, side by
    side (one writev) when copying it to join would cost more than it saves."""
    if len(body) <= JOIN_BELOW:
        head.append(body)
        transport.write(b"".join(head))
    else:
        transport.writelines((b"".join(head), body))


def _nothing() -> None:
    pass


class Cycle:
    """A request's state (its body as it arrives) and its answer's (head, length, end)."""

    __slots__ = (
        "body",
        "chunked",
        "default_headers",
        "disconnected",
        "flow",
        "held",
        "keep_alive",
        "length_left",
        "message_event",
        "more_body",
        "on_response",
        "response_complete",
        "response_started",
        "scope",
        "transport",
        "waiting_for_100_continue",
    )

    def __init__(
        self,
        scope: MutableMapping[str, Any],
        transport: asyncio.Transport,
        flow: Flow,
        default_headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        expect_100_continue: bool,
        on_response: Callable[[], None],
    ) -> None:
        self.scope = scope
        self.transport = transport
        self.flow = flow
        self.default_headers = default_headers
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100_continue
        self.on_response = on_response  # the connection's: the next pipelined request, or keep-alive
        self.message_event = asyncio.Event()  # set when body arrives, or the request ends either way
        self.disconnected = False
        self.body = bytearray()
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked = False  # the answer's body goes out in chunks (its length is not known)
        self.length_left = 0  # bytes of a known-length answer's body still to send
        self.held: list[bytes] | None = None  # a known-length answer's head, until its body comes

    # -- the app's task -------------------------------------------------------------------

    async def run_asgi(self, app: App) -> None:
        """Run the app for this request; a crash is a 500 if nothing was sent, else a close."""
        try:
            result = await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:  # the server's shutdown ran out of time for this request
            if not self.response_started and not self.disconnected:
                self._write_refusal(503, "the server is shutting down: retry", "shutting_down")
            self.transport.close()
        except BaseException as exc:
            log.error("exception in the ASGI application", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self.transport.close()
        else:
            if result is not None:
                log.error("the ASGI application returned %r instead of None", result)
                self.transport.close()
            elif not self.disconnected:
                if not self.response_started:
                    log.error("the ASGI application returned without starting its response")
                    await self._send_500()
                elif not self.response_complete:
                    log.error("the ASGI application returned without completing its response")
                    self.transport.close()
        finally:
            self.on_response = _nothing  # (a late send after a close must not start another request)

    async def _send_500(self) -> None:
        self._write_refusal(500, "internal server error", "internal_error")

    def _write_refusal(self, status: int, msg: str, kind: str) -> None:
        """An answer of servectl's own in its error shape, after which the connection closes."""
        rid = request_id_from(None)
        body = error_body(msg, rid, kind)
        self.keep_alive = False
        if not self.send_whole(status, answer_headers(body, rid), body):  # a HEAD, a full send buffer
            self.transport.close()

    # -- ASGI -----------------------------------------------------------------------------

    async def receive(self) -> Message:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not (self.disconnected or self.response_complete):
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body = bytes(self.body)
        self.body = bytearray()
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: Message) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return  # nobody to write to: the app's answer is dropped
        kind = message["type"]
        if self.response_complete:
            raise RuntimeError(f"ASGI message {kind!r} sent after the response was complete")
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self._start(message["status"], message.get("headers", ()))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
        self._write_body(message.get("body", b""), message.get("more_body", False))

    def _start(self, status: int, headers: Any) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        head = [status_line(status)]
        for name, value in self.default_headers:
            head += (name, b": ", value, b"\r\n")
        length: int | None = None
        closing = False
        for raw_name, value in headers:
            name = raw_name.lower()
            if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
                raise RuntimeError(f"invalid HTTP header {raw_name!r}: {value!r}")
            if name == b"content-length" and not self.chunked:
                length = int(value)
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                length, self.chunked = None, True
            elif name == b"connection" and b"close" in (token.strip() for token in value.lower().split(b",")):
                self.keep_alive, closing = False, True
            head += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not closing:
            head.append(b"connection: close\r\n")
        bodiless = self.scope["method"] == "HEAD" or status in _NO_BODY_STATUS
        if length is None and not self.chunked and not bodiless:
            self.chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        self.length_left = length or 0
        if self.length_left and not bodiless:
            self.held = head  # joined to the body: one write
        else:
            self.transport.write(b"".join(head))

    def _write_body(self, body: bytes, more: bool) -> None:
        held, self.held = self.held, None
        if self.scope["method"] == "HEAD":
            self.length_left = 0  # a HEAD answer's body is never written
        elif self.chunked:
            out = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more:
                out.append(b"0\r\n\r\n")
            if out:
                self.transport.write(b"".join(out))
        else:
            if len(body) > self.length_left:
                raise RuntimeError("response body longer than its Content-Length")
            self.length_left -= len(body)
            if held is not None:
                write_joined(self.transport, held, body)
                held = None
            elif body:
                self.transport.write(body)
        if held is not None:
            self.transport.write(b"".join(held))
        if not more:
            if self.length_left:
                raise RuntimeError("response body shorter than its Content-Length")
            self._complete()

    def _complete(self) -> None:
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    # -- servectl's own answers -----------------------------------------------------------

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
        """Write an answer servectl built (its headers are its own: not checked again);
        False (nothing done) where the ASGI path must take it: an answer already started, a
        paused write (the ASGI path waits for the drain), a HEAD request."""
        if self.response_started or self.flow.write_paused or self.scope["method"] == "HEAD":
            return False
        if self.disconnected:
            return True
        self.response_started = True
        self.waiting_for_100_continue = False
        head = [status_line(status)]
        for name, value in self.default_headers:
            head += (name, b": ", value, b"\r\n")
        closing = False
        for name, value in headers:
            if name == b"connection" and b"close" in value.lower():
                self.keep_alive, closing = False, True
            head += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not closing:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        write_joined(self.transport, head, body)
        self._complete()
        return True
