"""Worker messages: the msgpack codec, the API side's framing, and the worker's Inbox."""

from __future__ import annotations

import queue
import struct
from multiprocessing import Pipe

import pytest

from servectl.handler import HandlerInfo
from servectl.outcome import ENDED, GONE, Failure, Reply
from servectl.runtime.inmemory import ThreadConn
from servectl.worker.inbox import Inbox, Outbox
from servectl.worker.messages import (
    Batch,
    Cancel,
    Chunk,
    FromWorker,
    PipeClosed,
    Ready,
    Request,
    Result,
    Results,
    SetupFailed,
    Stop,
    Tokens,
    ToWorker,
    decode_from_worker,
    decode_to_worker,
    encode,
)
from servectl.worker.transport import WorkerChannel, encode_frame

INFO = HandlerInfo(
    name="h",
    hooks=("predict",),
    request_schema={"type": "object"},
    example={"x": [1, 2.5, None]},
    streams=True,
    routes={"v2": HandlerInfo(name="h.v2", hooks=("predict",), metadata={"name": "m"})},
)
FROM_WORKER: list[FromWorker] = [
    Ready(INFO),
    SetupFailed("RuntimeError: no weights"),
    Chunk(7, b'{"token":1}'),
    Tokens(4, 12, 3),
    Results(
        2,
        [
            Result(1, Reply(b"[1]")),
            Result(2, Failure(422, "validation_error", "invalid request: x", [{"loc": ["x", 0], "msg": "m"}])),
            Result(3, ENDED),
            Result(4, GONE),
        ],
        0.25,
    ),
    Results(3, [], None),
]
TO_WORKER: list[ToWorker] = [
    Batch(5, [Request(1, "rid", b"{}", "predict"), Request(2, "r2", b"", "v2")]),
    Cancel([1, 2]),
    Stop(),
]


@pytest.mark.parametrize("message", FROM_WORKER, ids=lambda m: type(m).__name__)
def test_messages_from_a_worker_decode_to_what_was_sent(message: FromWorker) -> None:
    decoded = decode_from_worker(encode(message))
    assert decoded == message and type(decoded) is type(message)


@pytest.mark.parametrize("message", TO_WORKER, ids=lambda m: type(m).__name__)
def test_messages_to_a_worker_decode_to_what_was_sent(message: ToWorker) -> None:
    assert decode_to_worker(encode(message)) == message


def test_each_direction_refuses_the_other_directions_messages() -> None:
    with pytest.raises(Exception, match="Invalid value 'Stop'"):
        decode_from_worker(encode(Stop()))
    with pytest.raises(Exception, match="Invalid value 'Tokens'"):
        decode_to_worker(encode(Tokens(0, 0, 1)))


def test_an_example_msgpack_cannot_hold_travels_as_json_would() -> None:
    class Point:
        def tolist(self) -> list[int]:
            return [1, 2]

    info = HandlerInfo(name="h", hooks=(), example={"p": Point()})
    decoded = decode_from_worker(encode(Ready(info)))
    assert isinstance(decoded, Ready) and decoded.info.example == {"p": [1, 2]}


def test_the_api_side_reads_frames_split_anywhere_as_a_connection_writes_them() -> None:
    got: list[FromWorker] = []
    channel = WorkerChannel(got.append, lambda: None)
    reader, writer = Pipe(duplex=False)
    stream = b""
    for message in FROM_WORKER:  # what Connection.send_bytes puts on the wire
        writer.send_bytes(encode(message))
        stream += struct.pack("!i", len(encode(message))) + encode(message)
    payload = encode(Tokens(1, 2, 9))
    stream += struct.pack("!iQ", -1, len(payload)) + payload  # the long header of frames over 2 GiB
    for i in range(0, len(stream), 5):
        channel.data_received(stream[i : i + 5])
    assert got == [*FROM_WORKER, Tokens(1, 2, 9)]
    for message in FROM_WORKER:  # and the worker side reads its own frames the same way
        assert decode_from_worker(reader.recv_bytes()) == message
    assert b"".join(encode_frame(Stop())) == struct.pack("!i", len(encode(Stop()))) + encode(Stop())


def inbox_with(*messages: ToWorker | None) -> Inbox:
    inbound: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    for message in messages:
        inbound.put(None if message is None else encode(message))
    return Inbox(ThreadConn(inbound, lambda data: None))


def test_the_inbox_keeps_batches_that_arrive_mid_stream_and_reports_cancels_once() -> None:
    first, later = Batch(1, [Request(1, "a", b"", "predict")]), Batch(2, [Request(5, "b", b"", "predict")])
    inbox = inbox_with(first, Cancel([1, 9]), later, Cancel([5]))
    assert inbox.next_batch() == first
    inbox.poll()  # between two steps of the first batch's stream
    assert inbox.take_cancelled([1, 2]) == [1]
    assert inbox.take_cancelled([1, 2]) == []
    assert inbox.next_batch() == later  # kept, not lost to the poll
    assert inbox.take_cancelled([5]) == [5]  # cancelled before it started
    assert inbox._cancelled == set()  # key 9 (of no kept batch) was forgotten


def test_the_inbox_ends_on_stop_or_a_closed_channel() -> None:
    inbox = inbox_with(Cancel([1]), Stop())
    inbox.poll()
    assert inbox.stopped and inbox.next_batch() is None
    inbox = inbox_with(None)
    with pytest.raises(PipeClosed):
        inbox.next_batch()
    inbox = inbox_with(None)
    with pytest.raises(PipeClosed):
        inbox.poll()


def test_the_outbox_turns_a_closed_channel_into_pipe_closed() -> None:
    conn = ThreadConn(queue.SimpleQueue(), lambda data: None)
    conn.closed = True
    with pytest.raises(PipeClosed):
        Outbox(conn).send(Tokens(0, 0, 1))
