"""`servectl validate --smoke`: the worker's own loop (`worker.process.serve`), run in this
process over an in-memory channel, answers each route's example request as it would when
serving: streams, generation and the protocols' adapters (OpenAI, V2) included."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from servectl.handler import HandlerError, HandlerInfo
from servectl.outcome import Answer, Ended, Failure, Reply
from servectl.protocols import ADAPTERS
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot
from servectl.worker.messages import (
    Batch,
    Chunk,
    Ready,
    Request,
    Results,
    SetupFailed,
    Stop,
    decode_from_worker,
    encode,
)
from servectl.worker.process import serve


@dataclass
class SmokeAnswer:
    """One route's answer to its example: its outcome, and the chunks streamed before it."""

    route: str
    outcome: Answer
    chunks: list[bytes] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return isinstance(self.outcome, Reply) or (isinstance(self.outcome, Ended) and bool(self.chunks))


class _Channel:
    """The worker's end of an in-memory channel. It answers Ready with one request per route
    that has an example, the next once the last has ended, then Stop."""

    def __init__(self) -> None:
        self.info: HandlerInfo | None = None
        self.setup_error: str | None = None
        self.answers: list[SmokeAnswer] = []
        self._todo: deque[tuple[str, bytes]] = deque()
        self._open: SmokeAnswer | None = None

    def send_bytes(self, buf: bytes) -> None:
        msg = decode_from_worker(buf)
        if isinstance(msg, Ready):
            self.info = msg.info
            self._todo.extend((route, _json(example)) for route, example in examples(msg.info))
        elif isinstance(msg, SetupFailed):
            self.setup_error = msg.message
        elif isinstance(msg, Chunk) and self._open is not None:
            self._open.chunks.append(msg.body)
        elif isinstance(msg, Results) and msg.results and self._open is not None:
            self._open.outcome = msg.results[-1].outcome  # one request at a time: its answer
            self.answers.append(self._open)
            self._open = None

    def recv_bytes(self) -> bytes:
        if self._open is not None:  # the worker waits for more while a request is open: it hung
            raise EOFError
        if not self._todo:
            return encode(Stop())
        route, body = self._todo.popleft()
        self._open = SmokeAnswer(route, Failure(500, "smoke", "no answer"))
        return encode(Batch(len(self.answers), [Request(len(self.answers), "smoke", body, route)]))

    def poll(self, timeout: float | None = 0.0) -> bool:
        return False  # nothing arrives mid-request: no cancellation, no Stop

    def finish(self) -> list[SmokeAnswer]:
        """The answers, with a request still open when the worker returned as a failure."""
        if self._open is not None:
            self.answers.append(self._open)
            self._open = None
        return self.answers


def _json(example: object) -> bytes:
    import orjson

    return orjson.dumps(example)


def examples(info: HandlerInfo) -> list[tuple[str, object]]:
    """(route, example request) for each route whose handler or adapter declares one."""
    found = [("predict", info.example)] if info.example is not None else []
    found += [(route, sub.example) for route, sub in info.routes.items() if sub.example is not None]
    return found


def smoke(spec: Spec) -> list[SmokeAnswer]:
    """Set up the spec's handler on the CPU and answer every route's example request."""
    channel = _Channel()
    serve(channel, spec, WorkerSlot(0, "cpu"), ADAPTERS)
    if channel.setup_error is not None:
        raise HandlerError(f"setup failed: {channel.setup_error}")
    if channel.info is not None and not examples(channel.info):
        raise HandlerError(f"{channel.info.name} declares no `example` request to smoke-test with")
    return channel.finish()
