"""Messages between the supervising API process and the others (`server.api_processes`).

The first API process owns the workers (spawns, watches, restarts, reloads them); each
other API process serves HTTP on the same port (SO_REUSEPORT) and reaches every worker on
the worker's own socket. Over a pipe of its own, the first one says which workers take
batches and the others report a hung worker and forward what only the owner can do:

first -> others: WorkerUp(model, index, address, pid, info, capacity, pipelined, slots)
                 WorkerRetired(model, index)   a reload replaced it: send it nothing more
                 Answer(ask, answer, failure) the answer to a forwarded request
                 Drain()                       the server stops: finish what you hold, then exit
others -> first: Serving()                     linked to every worker: it can answer (readiness)
                 WorkerHung(model, index)      a batch outlived its deadline there
                 Ask(ask, kind, model)         "reload" (the admin route)
"""

from __future__ import annotations

from typing import Any

import msgspec

from servectl.handler import HandlerInfo
from servectl.outcome import Failure
from servectl.worker.devices import WorkerSlot


class WorkerUp(msgspec.Struct, frozen=True, array_like=True, tag=True):
    model: str
    index: int
    address: str
    pid: int
    info: HandlerInfo
    capacity: int  # requests it takes while busy (continuous generation); 0: one batch
    pipelined: bool
    slots: list[WorkerSlot]  # the model's slots now (a reload changes them)


class WorkerRetired(msgspec.Struct, frozen=True, array_like=True, tag=True):
    model: str
    index: int


class Answer(msgspec.Struct, frozen=True, array_like=True, tag=True):
    ask: int
    answer: dict[str, Any] | None
    failure: Failure | None


class Drain(msgspec.Struct, frozen=True, array_like=True, tag=True):
    pass


ToPeer = WorkerUp | WorkerRetired | Answer | Drain


class WorkerHung(msgspec.Struct, frozen=True, array_like=True, tag=True):
    model: str
    index: int


class Ask(msgspec.Struct, frozen=True, array_like=True, tag=True):
    ask: int
    kind: str
    model: str


class Serving(msgspec.Struct, frozen=True, array_like=True, tag=True):
    pass


FromPeer = Serving | WorkerHung | Ask

_to_peer: msgspec.msgpack.Decoder[ToPeer] = msgspec.msgpack.Decoder(ToPeer)
_from_peer: msgspec.msgpack.Decoder[FromPeer] = msgspec.msgpack.Decoder(FromPeer)
decode_to_peer = _to_peer.decode
decode_from_peer = _from_peer.decode
