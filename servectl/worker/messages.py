"""Messages between the API process and a worker: typed msgspec Structs, one msgpack frame each.

API -> worker:   Batch(batch_id, [Request(key, request_id, body, route), ...])
                 Cancel([key, ...])        stop streaming to these requests
                 Stop()
worker -> API:   Ready(HandlerInfo)
                 SetupFailed(message)
                 Chunk(key, body)          one streamed chunk, already serialized
                 Tokens(key, prompt, completion)  a request's tokens (metrics, stats, rate limits)
                 Results(batch_id, [Result(key, Answer), ...], predict_s | None, Stages | None)

A request's Result ends it; for a stream it comes after its chunks (`Ended` for a clean end,
`Gone` for a cancelled stream, else a `Failure`). A batch may answer in several Results
messages (streams that end early); the last one carries the batch's predict time.

The frames are those of `multiprocessing.Connection.send_bytes` (a 4-byte big-endian length,
or -1 and an 8-byte length, then the payload); the payload is msgpack, decoded to the union
of one direction's messages (each message is tagged with its class name). The hot-path
messages are not tracked by the garbage collector (`gc=False`: they hold no cycles), which
makes decoding a batch's results about a fifth faster.
"""

from __future__ import annotations

import os
import struct
from multiprocessing.connection import Connection
from typing import Protocol

import msgspec

from servectl.handler import HandlerInfo
from servectl.outcome import Answer
from servectl.worker.codec import to_json_value

ORIGIN_SHIFT = 48  # a request key's (and batch id's) bits above this say which API process sent it


def origin_of(key: int) -> int:
    """Which API process (0: the supervisor's) a request key or batch id belongs to."""
    return key >> ORIGIN_SHIFT


class PipeClosed(BaseException):
    """The API process closed a worker's pipe (it stops, or is gone): the worker ends quietly.
    A BaseException, so that no `except Exception` around handler code takes it for a
    handler error."""


# --- API -> worker ------------------------------------------------------------------


class Request(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One request inside a batch; `route` says which API decodes it ("predict", "v2"...)."""

    key: int
    request_id: str
    body: bytes
    route: str
    json_length: int | None = None  # a framed body: this many bytes of JSON, then binary (V2's binary data)


class Batch(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    batch_id: int
    items: list[Request]


class Cancel(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """Stop working on these requests (client gone, deadline passed, slow reader)."""

    keys: list[int]


class Stop(msgspec.Struct, frozen=True, array_like=True, tag=True):
    """Finish the batch at hand (a stream stops at its next step) and exit."""


ToWorker = Batch | Cancel | Stop


# --- worker -> API ------------------------------------------------------------------


class Ready(msgspec.Struct, frozen=True, array_like=True, tag=True):
    info: HandlerInfo


class SetupFailed(msgspec.Struct, frozen=True, array_like=True, tag=True):
    message: str


class Chunk(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    key: int
    body: bytes


class Tokens(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    """Tokens a request used: its prompt's, and those generated for it (since the last count)."""

    key: int
    prompt: int
    completion: int


class Result(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """How one request ended."""

    key: int
    outcome: Answer


class Stages(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Where a batch's time in the worker went (traces' child spans): parse, validate and
    decode; predict; encode and serialize."""

    decode_s: float
    predict_s: float
    encode_s: float


class Results(msgspec.Struct, frozen=True, gc=False, array_like=True, tag=True):
    batch_id: int
    results: list[Result]
    predict_s: float | None  # set on a batch's last Results message: the batch is complete
    stages: Stages | None = None  # with predict_s, for a batch run by the batch runner


FromWorker = Ready | SetupFailed | Chunk | Tokens | Results


# --- the codec ----------------------------------------------------------------------


# values msgpack has no type for (in a handler's `example`, say) travel as JSON has them
_encoder = msgspec.msgpack.Encoder(enc_hook=to_json_value)
encode = _encoder.encode
_to_worker: msgspec.msgpack.Decoder[ToWorker] = msgspec.msgpack.Decoder(ToWorker)
_from_worker: msgspec.msgpack.Decoder[FromWorker] = msgspec.msgpack.Decoder(FromWorker)
decode_to_worker = _to_worker.decode
decode_from_worker = _from_worker.decode


_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


def read_frame(conn: Connection) -> bytearray:
    """One frame's payload, read straight into a buffer of its size: one copy out of the
    kernel, where `Connection.recv_bytes` makes three (chunks, a BytesIO, its value)."""
    fd = conn.fileno()
    (size,) = _SHORT.unpack(_read_exactly(fd, 4))
    if size == -1:
        (size,) = _LONG.unpack(_read_exactly(fd, 8))
    return _read_exactly(fd, size)


def _read_exactly(fd: int, size: int) -> bytearray:
    buf = bytearray(size)
    with memoryview(buf) as view:
        got = 0
        while got < size:
            n = os.readv(fd, [view[got:]])
            if n == 0:
                raise EOFError
            got += n
    return buf


class Conn(Protocol):
    """The worker's end of its channel: a `multiprocessing.Connection`, or the in-memory one."""

    def send_bytes(self, buf: bytes) -> None: ...

    def recv_bytes(self) -> bytes | bytearray: ...

    def poll(self, timeout: float | None = 0.0) -> bool: ...
