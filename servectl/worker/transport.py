"""The API process's end of a worker pipe: an asyncio protocol, never blocking the loop.

Workers use a plain blocking `multiprocessing.Connection`; this side speaks the same wire
format (a 4-byte big-endian length, or -1 and an 8-byte length, then a msgpack message, see
`messages`) through the event loop's own transport, so large results arrive in pieces and large batches are written
out in the background, with no threads and no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar, cast

from servectl.worker.messages import FromWorker, decode_from_worker, encode

M = TypeVar("M")

PIPE_BUFFER = 4 * 2**20  # bytes; the kernel caps it (net.core.wmem_max / rmem_max)


def widen(sock: socket.socket) -> None:
    """Bigger socket buffers on a worker's channel: a large batch or answer crosses in fewer
    wake-ups of the other side (the default is about 200 KiB)."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, PIPE_BUFFER)


_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


def encode_frame(message: Any) -> list[bytes]:
    payload = encode(message)
    n = len(payload)
    header = _SHORT.pack(n) if n <= 0x7FFFFFFF else _SHORT.pack(-1) + _LONG.pack(n)
    return [header, payload]


class FramedChannel(asyncio.Protocol, Generic[M]):
    """Framed msgpack messages over a socket, decoded with `decode` (worker pipes, and the
    links between API processes)."""

    def __init__(
        self, decode: Callable[[memoryview], M], on_message: Callable[[M], None], on_lost: Callable[[], None]
    ) -> None:
        self.decode = decode
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    @classmethod
    async def take_over(cls, conn: Connection, make: Callable[[], FramedChannel[M]]) -> FramedChannel[M]:
        """Take over a Connection's socket (the Connection object is closed)."""
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()
        loop = asyncio.get_running_loop()
        _, channel = await loop.connect_accepted_socket(make, sock)
        return channel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass it

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        start, end = 0, len(buf)
        with memoryview(buf) as view:  # decoded in place; released before the buffer shrinks
            while end - start >= 4:
                (size,) = _SHORT.unpack_from(buf, start)
                header = 4
                if size == -1:
                    if end - start < 12:
                        break
                    (size,) = _LONG.unpack_from(buf, start + 4)
                    header = 12
                if end - start < header + size:
                    break
                message = self.decode(view[start + header : start + header + size])
                start += header + size
                self.on_message(message)
        del buf[:start]

    def send(self, message: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(encode_frame(message))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()


class WorkerChannel(FramedChannel[FromWorker]):
    """Framed msgpack messages to and from one worker."""

    def __init__(self, on_message: Callable[[FromWorker], None], on_lost: Callable[[], None]) -> None:
        super().__init__(decode_from_worker, on_message, on_lost)

    @classmethod
    async def attach(
        cls, conn: Connection, on_message: Callable[[FromWorker], None], on_lost: Callable[[], None]
    ) -> WorkerChannel:
        """Take over a Connection's socket (the Connection object is closed)."""
        channel = await cls.take_over(conn, lambda: cls(on_message, on_lost))
        assert isinstance(channel, WorkerChannel)
        return channel
