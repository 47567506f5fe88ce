"""servectl's HTTP/1.1 connection: an asyncio protocol over httptools' parser.

uvicorn runs it through its public `Config(http=...)`: uvicorn owns the sockets, the
lifespan, the signals and the graceful shutdown; this class owns what happens on one
connection. It bounds what uvicorn's own protocol leaves open to a public server: the
bytes and the time a request head may take (httptools joins a header's pieces until it
ends, so one 30 MB header cost 30 MB), the connections open at once (answered in JSON,
not text), and it keeps HTTP/1.1's order: every pipelined request gets its own answer, in
order, before any refusal of the bytes behind it.

Past 400 lines on purpose: a connection is one state machine (the parser's callbacks,
pipelining, the head's byte and time limits, refusals owed after answers all read and
move the same state); split across modules, the order of its events could not be read
in one place. Its clock (`clock`), answers (`cycle`) and back-pressure (`flow`) are apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import urllib.parse
from collections import deque
from typing import Any, ClassVar, Protocol, cast

import httptools

from servectl.protocols.predict.errors import error_body
from servectl.server.asgi import request_id_from
from servectl.server.http.clock import ConnectionClock
from servectl.server.http.cycle import App, Cycle, status_line
from servectl.server.http.flow import BODY_HIGH_WATER, Flow
from servectl.server.http.limits import ConnectionLimits, refusals

log = logging.getLogger("servectl")

LINGER_S = 2.0  # after a refusal, read and drop what the client still sends, so it sees the answer
BUSY_LINGER_S = 0.5  # shorter for a connection over max_connections: its descriptor is over budget
ABORT = "servectl.abort"  # scope["extensions"][ABORT](): drop the connection now, unsent bytes and all

Refusal = tuple[int, str, str, tuple[tuple[bytes, bytes], ...]]  # status, message, kind, extra headers


class Express(Protocol):
    """An app's lane for requests it answers without an asyncio task (`express.ExpressLane`)."""

    def take(self, cycle: Cycle) -> bool:
        """Answer the request whose whole body is in; False: it goes to the app's task."""


def _new_parser(protocol: Connection) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    with contextlib.suppress(AttributeError):  # httptools < 0.6.3: no such switch
        # a request answered with `Connection: close` may have bytes behind it: they are not an error
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


class Connection(asyncio.Protocol):
    """One client connection, from its first byte to its close.

    `_head_bytes` counts bytes received since the connection opened or the last request
    ended (None while a body is read): bytes are counted before the parser sees them, so a
    request head never costs more than `max_head_bytes` (plus at most one read when
    requests are pipelined) however it is sent.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    express: ClassVar[Express | None] = None

    def __init__(
        self,
        config: Any,  # uvicorn.Config: its public app, root_path and asgi_version
        server_state: Any,  # uvicorn.server.ServerState: connections, tasks, default headers
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app: App = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.app_state = app_state
        self.root_path: str = config.root_path
        self._asgi = {"version": config.asgi_version, "spec_version": "2.3"}  # each scope's "asgi"
        self.parser = _new_parser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.flow: Flow = None  # type: ignore[assignment]
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self._extensions: dict[str, Any] = {}
        # the request being parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.scope: dict[str, Any] = {}
        self.expect_100_continue = False
        self.cycle: Cycle | None = None  # the newest request's
        self._serving: Cycle | None = None  # the request being answered (older than `cycle` when pipelined)
        self.pipeline: deque[Cycle] = deque()  # requests waiting their turn, newest first
        self._deferred: Cycle | None = None  # offered to the express lane once its body is in
        self._head_bytes: int | None = 0
        self._heads = 0  # request heads completed on this connection
        self._in_head = False  # the parser is inside a request head (begun, not complete)
        self._ignoring = False  # a request's Upgrade is being ignored: its body is still to come
        self._upgrade_body: int | None = None  # bytes of that body still to come
        self.clock = ConnectionClock(self.loop, self._on_head_late, self._on_idle)
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refused = False  # refused: what else arrives is dropped
        self._busy = False  # over max_connections: closed as soon as its request head is in
        self._last_word: Refusal | None = None  # a refusal owed after the answers before it

    # -- the connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        self.flow = Flow(transport)
        if len(self.connections) >= self.limits.max_connections:
            self._busy = True  # never added to the connections: it is not served
            msg = f"server busy: {self.limits.max_connections} connections open (server.max_connections)"
            self._refuse(503, msg, "overloaded", ((b"retry-after", b"1"),))
            return
        self.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        self.clock.head_from_now(self.limits.header_timeout_s)
        self._extensions = {ABORT: self._abort}

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.clock.stop()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        # the request being answered, the newest one and those waiting their turn all learn
        # that the client left: their work is dropped, not answered into a closed transport
        for cycle in (self._serving, self.cycle, *self.pipeline):
            if cycle is not None:
                if not cycle.response_complete:
                    cycle.disconnected = True
                cycle.message_event.set()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: the transport closes

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close when idle, else after the answer in progress."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    def _abort(self) -> None:
        """Drop the connection with a reset: what the socket still holds for a client that
        stopped reading is discarded (a plain close would send it all first)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    # -- bytes in -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._receive(data)
        if self._deferred is not None:  # its body is still coming: the app's task reads the rest
            cycle, self._deferred = self._deferred, None
            self._start(cycle)

    def _receive(self, data: bytes) -> None:
        if self._refused:  # answered and closing: drop what still arrives
            if self._busy and b"\r\n\r\n" in data:
                self.transport.close()
            return
        self.clock.idle_due = None
        if self._head_bytes is None:  # a body: flow control bounds it
            cycle = self.cycle
            if self.clock.head_due is None and cycle is not None and cycle.response_complete:
                # the rest of a body already answered (413, 415...): it gets header_timeout_s too
                self.clock.head_from_now(self.limits.header_timeout_s)
            self._feed(data)
            return
        if self.clock.head_due is None:  # the first bytes of a new request on a kept-alive connection
            self.clock.head_from_now(self.limits.header_timeout_s)
        room = self.limits.max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            self._feed(data)
            return
        self._head_bytes += room
        heads = self._heads
        self._feed(data[:room])
        if self._refused or self.transport.is_closing():  # answered 400
            return
        if self._heads == heads:  # all those bytes, and still no end of headers
            kb = self.limits.max_head_bytes // 1024
            msg = f"request line and headers larger than server.max_header_kb ({kb} KiB)"
            self._refuse(431, msg, "headers_too_large")
            return
        self._receive(data[room:])

    def _feed(self, data: bytes) -> None:
        if self._upgrade_body is not None:  # the body of a request whose Upgrade was ignored
            self._take_upgrade_body(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:  # (servectl speaks no other protocol)
            self._ignore_upgrade(data[upgrade.args[0] :])
        except httptools.HttpParserError:
            self._invalid()

    def _ignore_upgrade(self, rest: bytes) -> None:
        """An Upgrade servectl does not speak (curl --http2 asks for h2c): served as HTTP/1.1,
        as the protocol allows. The parser stops at such a request's head and takes its body
        for the new protocol's bytes, so the body (by its Content-Length) is taken here, and
        what follows it goes to a new parser."""
        self.parser = _new_parser(self)
        self._ignoring = False
        headers = dict(self.headers)
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or b"transfer-encoding" in headers:
            self._invalid()  # a chunked body with an Upgrade: nobody sends it, nothing to guess
            return
        self._upgrade_body = int(length)
        self._take_upgrade_body(rest)

    def _take_upgrade_body(self, data: bytes) -> None:
        left = self._upgrade_body
        assert left is not None
        piece = data[:left]
        if piece:
            self.on_body(piece)
        self._upgrade_body = left = left - len(piece)
        if left:
            return
        self._upgrade_body = None
        self.on_message_complete()
        if len(data) > len(piece):
            self._receive(data[len(piece) :])

    # -- the parser's callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = {
            "type": "http",
            "asgi": self._asgi,
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
            "extensions": self._extensions,
        }
        self._in_head = True
        if self.clock.head_due is None:  # a request begun in the same read as the last one's end
            self.clock.head_from_now(self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, which is not the value's (RFC 9110 5.5)
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._heads += 1
        self._in_head = False
        self.clock.head_due = None
        parser = self.parser
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade():
            self._ignoring = True  # the parser takes no body for it: `_ignore_upgrade` does
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path if self.root_path else raw_path
        scope["query_string"] = url.query or b""
        previous = self.cycle
        cycle = self.cycle = Cycle(
            scope,
            self.transport,
            self.flow,
            self.server_state.default_headers,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            expect_100_continue=self.expect_100_continue,
            on_response=self.on_response_complete,
        )
        if previous is None or previous.response_complete:
            if self.express is None:
                self._start(cycle)
            else:  # the express lane may answer it once its body is in (`on_message_complete`)
                self._serving = self._deferred = cycle
        else:  # pipelined: it waits for the answers before it
            self.flow.pause_reading()
            self.pipeline.appendleft(cycle)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete or cycle.disconnected:
            return
        cycle.body += body
        if len(cycle.body) > BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        if self._ignoring:  # an Upgrade's head: its body comes after (`_ignore_upgrade`)
            return
        self._head_bytes = 0
        self.clock.head_due = None  # it may have been timing an answered body's rest
        cycle = self.cycle
        if cycle is None or cycle.response_complete or cycle.disconnected:
            return
        cycle.more_body = False
        cycle.message_event.set()
        if cycle is self._deferred:
            self._deferred = None
            assert self.express is not None
            if not self.express.take(cycle):
                self._start(cycle)

    # -- answers --------------------------------------------------------------------------

    def _start(self, cycle: Cycle) -> None:
        """The app's task for a request."""
        self._serving = cycle
        task = self.loop.create_task(cycle.run_asgi(self.app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_response_complete(self) -> None:
        """An answer is out: the next pipelined request, a refusal owed, or keep-alive."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self._start(self.pipeline.pop())
        elif self._last_word is not None:  # every answer owed is out: now the refusal behind them
            self._write_refusal(*self._last_word)
            self._last_word = None
        else:
            self.clock.idle_from_now(self.limits.keep_alive_s)

    def _on_head_late(self) -> None:
        """The request head did not arrive in time: close, with a 408 if any of it came."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # a pipelined request is late: finish this answer, then close
            return
        if self._head_bytes or self._in_head:
            limit = self.limits.header_timeout_s
            msg = f"request line and headers not received within server.header_timeout_s={limit:g}s"
            self._refuse(408, msg, "request_timeout")
        else:
            self.transport.close()

    def _on_idle(self) -> None:
        """Kept alive and idle for keep_alive_s: closed."""
        if not self.transport.is_closing():
            self.transport.close()

    # -- refusals -------------------------------------------------------------------------

    def _invalid(self) -> None:
        """Bytes that are not HTTP/1.1: a 400 in servectl's error shape, then close.

        The request they belong to never reaches the app (or, already being served, is told
        its client is gone: its sends are dropped, nothing is logged). Answers owed to the
        requests before it go out first (uvicorn wrote its 400 at once, which the client read
        as the answer to its valid request); then the connection closes without the 400, as
        no request of its own is left to answer."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:  # inside its own body
            self._drop(cycle)
            if cycle.response_started:  # it answers while it uploads: a 400 cannot follow
                self._refused = True
                self.transport.close()
                return
        elif cycle is not None and self._head_bytes is None:  # inside the body of a request answered early
            refusals.add(400, "invalid HTTP in the rest of an answered body: closing")
            self._refused = True
            self.transport.close()  # (its answer is out: a second one would answer nothing)
            return
        if self._answers_owed():
            refusals.add(400, "invalid HTTP behind a request: closing once it is answered")
            self._refused = True  # what else arrives is dropped
            self._close_after_answers()
            return
        self._refuse(400, "invalid HTTP request: it does not parse as HTTP/1.1", "bad_request")

    def _drop(self, cycle: Cycle) -> None:
        """Forget a request whose own bytes went bad: never started if it was waiting (for its
        body or its turn), told its client is gone if its app already runs."""
        if self._deferred is cycle:
            self._deferred = None
        with contextlib.suppress(ValueError):
            self.pipeline.remove(cycle)
        cycle.disconnected = True
        cycle.message_event.set()
        if self._serving is cycle:
            self._serving = None

    def _answers_owed(self) -> bool:
        """Requests before the current bytes are still to be answered."""
        serving = self._serving
        return bool(self.pipeline) or (
            serving is not None and not serving.response_complete and not serving.disconnected
        )

    def _close_after_answers(self) -> None:
        """The last request owed an answer says `Connection: close`: the connection ends after it."""
        last = self.pipeline[0] if self.pipeline else self._serving
        assert last is not None
        last.keep_alive = False
        self.clock.head_due = None

    def _refuse(self, status: int, msg: str, kind: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Answer before (or instead of) any app, then close once the client stops sending.

        Behind requests still owed an answer, the refusal waits for them
        (`on_response_complete` writes it): a client that pipelines reads each answer for
        its own request. What else arrives is dropped from now on.
        """
        refusals.add(status, kind)
        self._refused = True
        self.clock.head_due = self.clock.idle_due = None
        if self._answers_owed():
            self._last_word = (status, msg, kind, extra)
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            self.transport.close()  # an answer is half sent: no refusal can follow it
            return
        self._write_refusal(status, msg, kind, extra)

    def _write_refusal(self, status: int, msg: str, kind: str, extra: tuple[tuple[bytes, bytes], ...]) -> None:
        """Write the refusal and close once the client stops sending.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        the answer before the client reads it; so the input is drained for up to LINGER_S.
        """
        rid = request_id_from(None)
        body = error_body(msg, rid, kind)
        head = [status_line(status)]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid.encode()),
            (b"connection", b"close"),
            *extra,
        ]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.clock.stop()
        self._linger_timer = self.loop.call_later(BUSY_LINGER_S if self._busy else LINGER_S, self.transport.close)


def _address(info: Any) -> tuple[str, int] | None:
    """(host, port) of a socket address; None where there is none (a Unix socket)."""
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


def connection_class(limits: ConnectionLimits, express: Express | None = None) -> type[asyncio.Protocol]:
    """`Connection` bound to one server's limits (and its app's express lane), for
    `uvicorn.Config(http=...)`."""

    class BoundConnection(Connection):
        pass

    BoundConnection.limits = limits
    BoundConnection.express = express
    return BoundConnection
