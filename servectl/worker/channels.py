"""A worker's channels when several API processes reach it (`server.api_processes` > 1).

The supervisor's pipe stays the worker's lifeline (Ready, Stop, and its end means the
server is gone); the other API processes connect to a Unix socket the worker listens on,
one connection each, with the same frames as the pipe. The worker still has one reader
(its `Inbox`): this class only merges what arrives on every connection and sends each
answer back on the connection of the API process it belongs to, which the request keys
and batch ids say (`messages.origin_of`), so nothing is looked up per request.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
from collections import deque
from multiprocessing.connection import Connection

from servectl.worker.messages import read_frame
from servectl.worker.transport import widen


class ApiProcessChannels:
    """The supervisor's pipe (origin 0) and the connections other API processes open."""

    def __init__(self, pipe: Connection, address: str) -> None:
        self.pipe = pipe
        with contextlib.suppress(FileNotFoundError):  # a restarted slot's old socket
            os.unlink(address)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(address)
        self.listener.listen(64)
        self._selector = selectors.DefaultSelector()  # kept: one per wait costs a syscall or two more
        self._selector.register(pipe, selectors.EVENT_READ)
        self._selector.register(self.listener, selectors.EVENT_READ)
        self.peers: list[Connection] = []
        self._by_origin: dict[int, Connection] = {}
        self.gone: set[int] = set()  # origins whose API process closed its connection: drop their work
        self._arrived: deque[tuple[Connection, bytearray | None]] = deque()  # None: the pipe ended
        self.last: Connection = pipe  # where the last message read came from
        self.closing = False  # Stop has arrived: the pipe ends the worker once the others have left

    @property
    def peers_open(self) -> bool:
        return bool(self.peers)

    def claim(self, origin: int) -> None:
        """The last message read came from API process `origin` (a Batch says so)."""
        if origin:
            self._by_origin[origin] = self.last

    def poll(self, timeout: float | None = 0.0) -> bool:
        if self._arrived:
            return True
        for key, _ in self._selector.select(timeout):
            ready = key.fileobj
            if ready is self.listener:
                sock, _ = self.listener.accept()
                widen(sock)
                peer = Connection(sock.detach())
                self.peers.append(peer)
                self._selector.register(peer, selectors.EVENT_READ)
                continue
            assert isinstance(ready, Connection)
            try:
                self._arrived.append((ready, read_frame(ready)))
            except (EOFError, OSError):
                if ready is self.pipe:
                    self._arrived.append((ready, None))
                else:  # an API process closed its connection: it stopped, or is done with us
                    self._drop(ready)
        return bool(self._arrived)

    def recv_bytes(self) -> bytearray:
        while not self._arrived:
            if self.closing and not self.peers:
                raise EOFError  # stopped, and the last other API process has left
            self.poll(None)
        conn, data = self._arrived.popleft()
        if data is None:
            raise EOFError
        self.last = conn
        return data

    def send_bytes(self, buf: bytes) -> None:
        self.pipe.send_bytes(buf)

    def send_to(self, origin: int, buf: bytes) -> None:
        """Send to API process `origin`; dropped when it is gone (its requests went with it)."""
        if not origin:
            self.pipe.send_bytes(buf)
            return
        conn = self._by_origin.get(origin)
        if conn is None:
            return
        try:
            conn.send_bytes(buf)
        except OSError:
            self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        if conn in self.peers:
            self.peers.remove(conn)
            self._selector.unregister(conn)
        for origin in [o for o, c in self._by_origin.items() if c is conn]:
            del self._by_origin[origin]
            self.gone.add(origin)  # never reused: a restarted API process gets a new one
        conn.close()

    def close(self) -> None:
        for conn in self.peers:
            conn.close()
        self.listener.close()
        self._selector.close()
