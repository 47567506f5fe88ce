"""A worker's two ends of its channel: the Inbox (its one reader) and the Outbox.

The worker's main loop takes batches from the Inbox, blocking (or, while it generates,
`take_batch()` without waiting); a stream or generation calls `poll()` between steps,
which reads whatever has arrived without blocking: Cancel keys are recorded for the
stream to take, Stop is noted, and a Batch is kept for later. Nothing else reads the
channel, so no message is lost to a reader that did not expect it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from servectl.runtime.messages import (
    Batch,
    Cancel,
    Conn,
    FromWorker,
    PipeClosed,
    Stop,
    ToWorker,
    decode_to_worker,
    encode,
)


class Inbox:
    """Everything the API process sends a worker, read in one place."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._batches: deque[Batch] = deque()
        self._cancelled: set[int] = set()
        self.stopped = False  # Stop has arrived: finish what is at hand, then exit

    def _recv(self) -> ToWorker:
        try:
            data = self._conn.recv_bytes()
        except (EOFError, OSError):
            raise PipeClosed from None
        return decode_to_worker(data)

    def _keep(self, msg: ToWorker) -> None:
        match msg:
            case Batch():
                self._batches.append(msg)
            case Cancel(keys=keys):
                self._cancelled.update(keys)
            case Stop():
                self.stopped = True

    def next_batch(self) -> Batch | None:
        """The next batch to run, waiting for one; None once Stop has arrived."""
        while not self._batches and not self.stopped:
            self._keep(self._recv())
        if self.stopped:
            return None
        batch = self._batches.popleft()
        if self._cancelled:  # forget cancellations of requests that already ended
            live = {item.key for kept in (batch, *self._batches) for item in kept.items}
            self._cancelled &= live
        return batch

    def take_batch(self) -> Batch | None:
        """A batch that has arrived, if any, without waiting (between generation steps)."""
        return self._batches.popleft() if self._batches and not self.stopped else None

    def poll(self) -> None:
        """Read what has arrived, without waiting (between a stream's steps)."""
        try:
            while self._conn.poll(0):
                self._keep(self._recv())
        except (EOFError, OSError):
            raise PipeClosed from None

    def take_cancelled(self, keys: Iterable[int]) -> list[int]:
        """Which of `keys` were cancelled (each is reported once)."""
        if not self._cancelled:
            return []
        hit = [key for key in keys if key in self._cancelled]
        self._cancelled.difference_update(hit)
        return hit


class Outbox:
    """What a worker sends the API process."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def send(self, msg: FromWorker) -> None:
        self.send_encoded(encode(msg))

    def send_encoded(self, data: bytes) -> None:
        try:
            self._conn.send_bytes(data)
        except OSError:
            raise PipeClosed from None
