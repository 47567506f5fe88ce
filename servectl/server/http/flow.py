"""Back-pressure on one connection, both ways.

Reading pauses while a request body piles up unread or requests wait their turn behind
an answer; an answer's writer waits while the socket's send buffer is over its high mark.
"""

from __future__ import annotations

import asyncio

BODY_HIGH_WATER = 64 * 1024  # unread body bytes past which the connection stops reading


class Flow:
    __slots__ = ("_writable", "read_paused", "transport", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable = asyncio.Event()
        self._writable.set()

    async def drain(self) -> None:
        """Until the transport takes writes again (`resume_writing`)."""
        await self._writable.wait()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._writable.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._writable.set()
