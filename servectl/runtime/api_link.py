"""Messages between the supervising API process and the others (`server.api_processes`).

The first API process owns the workers (spawns, watches, restarts, reloads them); each
other API process serves HTTP on the same port (SO_REUSEPORT) and reaches every worker on
the worker's own socket. Over a pipe of its own, the first one says which workers take
batches and the others report a hung worker and forward what only the owner can do:

first -> others: WorkerUp(model, index, address, pid, info, capacity, pipelined)
                 WorkerRetired(model, index)   a reload replaced it: send it nothing more
                 Answer(ask, status, body)     the answer to a forwarded request
others -> first: WorkerHung(model, index)      a batch outlived its deadline there
                 Ask(ask, kind, model)         "reload" (the admin route)
"""

from __future__ import annotations

import msgspec

from servectl.handler import HandlerInfo


class WorkerUp(msgspec.Struct, frozen=True, array_like=True, tag=True):
    model: str
    index: int
    address: str
    pid: int
    info: HandlerInfo
    capacity: int  # requests it takes while busy (continuous generation); 0: one batch
    pipelined: bool


class WorkerRetired(msgspec.Struct, frozen=True, array_like=True, tag=True):
    model: str
    index: int


class Answer(msgspec.Struct, frozen=True, array_like=True, tag=True):
    ask: int
    status: int
    body: bytes  # JSON: the answer, or a Failure's fields


ToPeer = WorkerUp | WorkerRetired | Answer


class WorkerHung(msgspec.Struct, frozen=True, array_like=True, tag=True):
    model: str
    index: int


class Ask(msgspec.Struct, frozen=True, array_like=True, tag=True):
    ask: int
    kind: str
    model: str


FromPeer = WorkerHung | Ask

decode_to_peer = msgspec.msgpack.Decoder(ToPeer).decode
decode_from_peer = msgspec.msgpack.Decoder(FromPeer).decode
