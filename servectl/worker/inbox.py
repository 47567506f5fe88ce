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
from multiprocessing.connection import Connection

from servectl.worker.channels import ApiProcessChannels
from servectl.worker.messages import (
    Batch,
    Cancel,
    Chunk,
    Conn,
    FromWorker,
    PipeClosed,
    Results,
    Stop,
    Tokens,
    ToWorker,
    decode_to_worker,
    encode,
    origin_of,
    read_frame,
)


class Inbox:
    """Everything the API process sends a worker, read in one place."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._channels = conn if isinstance(conn, ApiProcessChannels) else None  # several API processes
        self._batches: deque[Batch] = deque()
        self._cancelled: set[int] = set()
        self.stopped = False  # Stop has arrived: finish what is at hand, then exit

    @property
    def finished(self) -> bool:
        """Stop has arrived and no other API process is still connected (they close their
        connection once they hold nothing here)."""
        return self.stopped and (self._channels is None or not self._channels.peers_open)

    def _recv(self) -> ToWorker:
        try:
            conn = self._conn
            data = read_frame(conn) if isinstance(conn, Connection) else conn.recv_bytes()
        except (EOFError, OSError):
            raise PipeClosed from None
        return decode_to_worker(data)

    def _keep(self, msg: ToWorker) -> None:
        match msg:
            case Batch():
                if self._channels is not None:
                    self._channels.claim(origin_of(msg.batch_id))
                self._batches.append(msg)
            case Cancel(keys=keys):
                self._cancelled.update(keys)
            case Stop():
                self.stopped = True
                if self._channels is not None:
                    self._channels.closing = True

    def next_batch(self) -> Batch | None:
        """The next batch to run, waiting for one; None once Stop has arrived (and every
        other API process has left)."""
        self._drop_gone()
        while not self._batches and not self.stopped:
            self._keep(self._recv())
        if self.stopped:
            if self._channels is None:
                return None
            while not self._batches:  # serve the other API processes until the last one leaves
                self._keep(self._recv())  # PipeClosed then
        batch = self._batches.popleft()
        if self._cancelled:  # forget cancellations of requests that already ended
            live = {item.key for kept in (batch, *self._batches) for item in kept.items}
            self._cancelled &= live
        return batch

    def _drop_gone(self) -> None:
        """Forget batches of API processes that left (nobody reads their answers)."""
        if self._channels is not None and self._channels.gone:
            gone = self._channels.gone
            self._batches = deque(b for b in self._batches if origin_of(b.batch_id) not in gone)

    def take_batch(self) -> Batch | None:
        """A batch that has arrived, if any, without waiting (between generation steps)."""
        self._drop_gone()
        return self._batches.popleft() if self._batches and not self.finished else None

    def poll(self) -> None:
        """Read what has arrived, without waiting (between a stream's steps)."""
        try:
            while self._conn.poll(0):
                self._keep(self._recv())
        except (EOFError, OSError):
            raise PipeClosed from None

    def take_cancelled(self, keys: Iterable[int]) -> list[int]:
        """Which of `keys` were cancelled, or belong to an API process that left (each is
        reported once)."""
        gone = self._channels.gone if self._channels is not None else ()
        if not self._cancelled and not gone:
            return []
        hit = [key for key in keys if key in self._cancelled or origin_of(key) in gone]
        self._cancelled.difference_update(hit)
        return hit


class Outbox:
    """What a worker sends the API process (the one each answer belongs to)."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._channels = conn if isinstance(conn, ApiProcessChannels) else None

    def send(self, msg: FromWorker) -> None:
        if self._channels is None:
            self.send_encoded(encode(msg))
            return
        match msg:
            case Results(batch_id=n) | Chunk(key=n) | Tokens(key=n):
                origin = origin_of(n)
            case _:  # Ready, SetupFailed: the supervisor's
                origin = 0
        try:
            self._channels.send_to(origin, encode(msg))
        except OSError:
            raise PipeClosed from None

    def send_encoded(self, data: bytes) -> None:
        try:
            self._conn.send_bytes(data)
        except OSError:
            raise PipeClosed from None
