"""A worker's channels to several API processes, in-process: real sockets, no processes."""

from __future__ import annotations

import multiprocessing as mp
import socket
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from servectl.outcome import Reply
from servectl.worker.channels import ApiProcessChannels
from servectl.worker.inbox import Inbox, Outbox
from servectl.worker.messages import (
    ORIGIN_SHIFT,
    Batch,
    PipeClosed,
    Request,
    Result,
    Results,
    Stop,
    decode_from_worker,
    encode,
)


def batch(origin: int, n: int) -> bytes:
    first = origin << ORIGIN_SHIFT
    return encode(Batch(first + n, [Request(first + n, f"r{n}", b"{}", "predict")]))


def connect(address: Path) -> Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(address))
    return Connection(sock.detach())


@pytest.fixture
def worker(tmp_path: Path):  # type: ignore[no-untyped-def]
    owner, pipe = mp.Pipe(duplex=True)
    channels = ApiProcessChannels(pipe, str(tmp_path / "w.sock"))
    yield owner, channels, tmp_path / "w.sock"
    channels.close()


def test_answers_go_back_to_the_api_process_that_sent_the_batch(worker) -> None:  # type: ignore[no-untyped-def]
    owner, channels, address = worker
    inbox, outbox = Inbox(channels), Outbox(channels)
    other = connect(address)
    owner.send_bytes(batch(0, 1))
    other.send_bytes(batch(7, 2))
    got = {inbox.next_batch().batch_id for _ in range(2)}  # type: ignore[union-attr]
    assert got == {1, (7 << ORIGIN_SHIFT) + 2}
    for batch_id in sorted(got):
        outbox.send(Results(batch_id, [Result(batch_id, Reply(b"{}"))], 0.001))
    assert decode_from_worker(owner.recv_bytes()).batch_id == 1
    assert decode_from_worker(other.recv_bytes()).batch_id == (7 << ORIGIN_SHIFT) + 2


def test_after_stop_the_worker_serves_the_others_until_the_last_leaves(worker) -> None:  # type: ignore[no-untyped-def]
    owner, channels, address = worker
    inbox = Inbox(channels)
    other = connect(address)
    other.send_bytes(batch(3, 1))
    assert inbox.next_batch() is not None  # the other process is now known to the worker
    owner.send_bytes(encode(Stop()))
    other.send_bytes(batch(3, 2))
    assert inbox.next_batch().batch_id == (3 << ORIGIN_SHIFT) + 2  # type: ignore[union-attr]
    assert not inbox.finished
    other.close()  # it holds nothing here any more
    with pytest.raises(PipeClosed):
        inbox.next_batch()


def test_the_work_of_an_api_process_that_left_is_dropped(worker) -> None:  # type: ignore[no-untyped-def]
    owner, channels, address = worker
    inbox = Inbox(channels)
    other = connect(address)
    other.send_bytes(batch(5, 1))
    assert inbox.next_batch() is not None
    other.send_bytes(batch(5, 2))  # queued, then its process dies
    other.close()
    owner.send_bytes(batch(0, 3))
    running = [(5 << ORIGIN_SHIFT) + 1, 4]
    inbox.poll()
    assert inbox.take_cancelled(running) == [(5 << ORIGIN_SHIFT) + 1]  # a stream for it stops
    assert inbox.next_batch().batch_id == 3  # type: ignore[union-attr]  # its queued batch is not run
