"""uvicorn's httptools protocol with the connection limits a public server needs.

uvicorn 0.55's httptools protocol bounds neither the size of a request head nor the time
a client may take to send it: httptools joins a header's pieces until the header ends, so
one 30 MB header costs 30 MB and more, and a client that dribbles bytes keeps its
connection (and a file descriptor) for ever. Its `limit_concurrency` answers text/plain
and counts tasks as well as connections. These limits are decided here, per connection,
before anything reaches the ASGI app (auth included), and answered in servectl's JSON
error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
import urllib.parse
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from servectl.protocols.predict.errors import error_body
from servectl.server.answers import CorkedWrites, WholeCycle
from servectl.server.asgi import request_id_from
from servectl.server.limits import ConnectionLimits, refusals

if TYPE_CHECKING:
    from uvicorn._types import ASGIVersions

log = logging.getLogger("servectl")

LINGER_S = 2.0  # after a refusal, read and drop what the client still sends, so it sees the answer
BUSY_LINGER_S = 0.5  # shorter for a connection over max_connections: its descriptor is over budget
ABORT = "servectl.abort"  # scope["extensions"][ABORT](): drop the connection now, unsent bytes and all


class Express(Protocol):
    """An app's lane for requests it answers without an asyncio task (`express.ExpressLane`)."""

    def take(self, cycle: WholeCycle) -> bool:
        """Answer the request whose whole body is in; False: it goes to the app's task."""


class GuardedProtocol(HttpToolsProtocol):
    """One client connection: uvicorn's, plus a cap on open connections, a cap on the bytes
    of a request line and headers, a deadline for them, and a float keep-alive timeout.

    `_head_bytes` counts bytes received since the connection opened or the last request
    ended (None while a body is read): bytes are counted before the parser sees them, so
    a request head never costs more than `max_head_bytes` (plus at most one read when
    requests are pipelined) however it is sent.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    express: ClassVar[Express | None] = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_bytes: int | None = 0
        self._heads = 0  # request heads completed on this connection
        self._in_head = False  # the parser is inside a request head (begun, not complete)
        # one clock per connection for both timeouts, wound to the earlier of two deadlines
        # (loop time; None: not timing) and moved only when it fires or one comes sooner:
        # a timer armed and cancelled per request costs more than the request's own routing
        self._head_due: float | None = None  # the request head (or an answered body's rest) must be in by then
        self._idle_due: float | None = None  # keep-alive: an idle connection closes then
        self._clock: asyncio.TimerHandle | None = None
        self._clock_at = math.inf  # when it fires (inf: not wound)
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._busy = False  # over max_connections: closed as soon as its request head is in
        self._extensions: dict[str, Any] = {}
        self._cork: CorkedWrites | None = None
        self._asgi: ASGIVersions = {"version": config.asgi_version, "spec_version": "2.3"}  # each scope's "asgi"
        self._serving: Any = None  # the cycle being answered (uvicorn's `cycle` is the newest one)
        self._deferred: WholeCycle | None = None  # offered to the express lane once its body is in
        self._ignoring = False  # a request's Upgrade is being ignored: its body is still to come
        self._upgrade_body: int | None = None  # bytes of that body still to come
        # a refusal (status, message, kind, headers) owed after the answers before it
        self._last_word: tuple[int, str, str, tuple[tuple[bytes, bytes], ...]] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport  # never added to the connections: it is not served
            self._busy = True
            msg = f"server busy: {self.limits.max_connections} connections open (server.max_connections)"
            self._refuse(503, msg, "overloaded", ((b"retry-after", b"1"),))
            return
        super().connection_made(transport)
        self._time_head()
        self._extensions = {ABORT: self._abort}

    def _abort(self) -> None:
        """Drop the connection with a reset: what the socket still holds for a client that
        stopped reading is discarded (a plain close would send it all first)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def on_message_begin(self) -> None:
        """uvicorn's, with servectl's scope extensions (one dict for the connection) and the
        head's deadline."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = {
            "type": "http",
            "asgi": self._asgi,
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
            "extensions": self._extensions,
        }
        self._in_head = True
        if self._head_due is None:  # a request begun in the same read as the last one's end
            self._time_head()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._serving = cycle
        super()._start_asgi_task(cycle, app)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._clock, self._linger_timer):
            if timer is not None:
                timer.cancel()
        # uvicorn tells only the newest request that its client left; with requests pipelined
        # behind it, the one being answered must know too (its work is dropped, not answered
        # into a closed transport), and so must those waiting their turn
        for cycle in (self._serving, *(queued for queued, _ in self.pipeline)):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._receive(data)
        if self._deferred is not None:  # its body is still coming: the app's task reads the rest
            cycle, self._deferred = self._deferred, None
            self._start_asgi_task(cycle, self.app)

    def _receive(self, data: bytes) -> None:
        if self._refused:  # answered and closing: drop what still arrives
            if self._busy and b"\r\n\r\n" in data:
                self.transport.close()
            return
        self._idle_due = None
        if self._head_bytes is None:  # a body: uvicorn's flow control bounds it
            if self._head_due is None and self.cycle is not None and self.cycle.response_complete:
                # the rest of a body already answered (413, 415...): it gets header_timeout_s too
                self._time_head()
            self._feed(data)
            return
        if self._head_due is None:  # the first bytes of a new request on a kept-alive connection
            self._time_head()
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
        """uvicorn's parsing of a read, with servectl's answers to what does not parse."""
        if self._upgrade_body is not None:  # the body of a request whose Upgrade was ignored
            self._take_upgrade_body(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._invalid()
        except httptools.HttpParserUpgrade as upgrade:  # (servectl speaks no WebSocket: ws="none")
            self._ignore_upgrade(data[upgrade.args[0] :])

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

    def _drop(self, cycle: RequestResponseCycle) -> None:
        """Forget a request whose own bytes went bad: never started if it was waiting (for its
        body or its turn), told its client is gone if its app already runs."""
        if self._deferred is cycle:
            self._deferred = None
        for queued in self.pipeline:
            if queued[0] is cycle:
                self.pipeline.remove(queued)
                break
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
        last = self.pipeline[0][0] if self.pipeline else self._serving
        assert last is not None
        last.keep_alive = False
        self._head_due = None

    def _ignore_upgrade(self, rest: bytes) -> None:
        """An Upgrade servectl does not speak (curl --http2 asks for h2c): served as HTTP/1.1,
        as the protocol allows. The parser stops at such a request's head and takes its body
        for the new protocol's bytes, so the body (by its Content-Length) is taken here, and
        what follows it goes to a new parser."""
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # as uvicorn sets up its own (httptools >= 0.6.3)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
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

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._heads += 1
        self._in_head = False
        self._head_due = None
        # uvicorn's (0.55) from here, less what servectl never configures (limit_concurrency:
        # it has max_connections above; WebSockets: ws="none"), making a `WholeCycle` in place
        # of uvicorn's cycle (2.5 us a request less than making uvicorn's and patching it)
        parser = self.parser
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade():
            if self._should_upgrade():
                return
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
        if self._cork is None:
            self._cork = CorkedWrites(self.transport)
        cycle = self.cycle = WholeCycle(
            scope=scope,
            transport=self._cork,  # type: ignore[arg-type]
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        self._cork.cycle = cycle
        if previous is None or previous.response_complete:
            if self.express is None:
                self._start_asgi_task(cycle, self.app)
            else:  # the express lane may answer it once its body is in (`on_message_complete`)
                self._serving = self._deferred = cycle
        else:  # pipelined: it waits for the answers before it
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))

    def on_message_complete(self) -> None:
        if self._ignoring:  # an Upgrade's head: its body comes after (`_ignore_upgrade`)
            return
        super().on_message_complete()
        self._head_bytes = 0
        self._head_due = None  # it may have been timing an answered body's rest
        cycle = self._deferred
        if cycle is not None:
            self._deferred = None
            assert self.express is not None
            if not self.express.take(cycle):
                self._start_asgi_task(cycle, self.app)

    def on_response_complete(self) -> None:
        """uvicorn's, with the keep-alive deadline on the connection's clock."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # the next pipelined request
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._last_word is not None:  # every answer owed is out: now the refusal behind them
            self._write_refusal(*self._last_word)
            self._last_word = None
        else:
            due = self._idle_due = self.loop.time() + self.limits.keep_alive_s
            if due < self._clock_at:  # (checked here: this runs for every answer)
                self._wind(due)

    def _time_head(self) -> None:
        due = self._head_due = self.loop.time() + self.limits.header_timeout_s
        if due < self._clock_at:
            self._wind(due)

    def _wind(self, due: float) -> None:
        """Make the clock fire by `due` (it may fire sooner: it then winds itself on)."""
        if self._clock_at <= due:
            return
        if self._clock is not None:
            self._clock.cancel()
        self._clock = self.loop.call_at(due, self._on_clock)
        self._clock_at = due

    def _on_clock(self) -> None:
        self._clock, self._clock_at = None, math.inf
        now = self.loop.time()
        head, idle = self._head_due, self._idle_due
        if head is not None and head <= now:
            self._head_due = None
            self._head_timeout()
        elif idle is not None and idle <= now:  # kept alive and idle for keep_alive_s: as uvicorn does
            self._idle_due = None
            if not self.transport.is_closing():
                self.transport.close()
        if self.transport.is_closing():
            return
        for due in (self._head_due, self._idle_due):
            if due is not None:
                self._wind(due)

    def _head_timeout(self) -> None:
        """The request head did not arrive in time: close, with a 408 if any of it came."""
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined request is late: finish this answer, then close
            return
        if self._head_bytes or self._in_head:
            limit = self.limits.header_timeout_s
            msg = f"request line and headers not received within server.header_timeout_s={limit:g}s"
            self._refuse(408, msg, "request_timeout")
        else:
            self.transport.close()

    def _refuse(self, status: int, msg: str, kind: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        """Answer before (or instead of) any app, then close once the client stops sending.

        Behind requests still owed an answer, the refusal waits for them
        (`on_response_complete` writes it): a client that pipelines reads each answer for
        its own request. What else arrives is dropped from now on.
        """
        refusals.add(status, kind)
        self._refused = True
        self._head_due = self._idle_due = None
        if self._answers_owed():
            self._last_word = (status, msg, kind, extra)
            return
        if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
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
        head = [STATUS_LINE[status]]
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
        if self._clock is not None:
            self._clock.cancel()
            self._clock, self._clock_at = None, math.inf
        self._linger_timer = self.loop.call_later(BUSY_LINGER_S if self._busy else LINGER_S, self.transport.close)


def protocol_class(limits: ConnectionLimits, express: Express | None = None) -> type[asyncio.Protocol]:
    """`GuardedProtocol` bound to one server's limits (and its app's express lane), for
    `uvicorn.Config(http=...)`."""

    class BoundProtocol(GuardedProtocol):
        pass

    BoundProtocol.limits = limits
    BoundProtocol.express = express
    return BoundProtocol
