"""The API process's hot path in-process, without uvicorn or wrk: the ASGI app servectl runs, driven
with fake HTTP scopes (64 at a time), and a fake worker that answers each batch at once (encoded
and decoded as over the pipe). Prints CPU microseconds per request for 6 rounds of 20,000.

    python benchmarks/hotpath.py /work/main off        # this checkout; `on`: access log on
    python benchmarks/hotpath.py /tmp/old-main off     # another checkout (e.g. a git worktree)
    python benchmarks/hotpath.py /work/main off 6 --via express   # through the HTTP protocol too

`--via asgi` (the default) calls the ASGI app as a server's task would; `--via express` and
`--via task` feed raw requests to servectl's HTTP protocol (fake transports, no sockets), with
and without the express lane, so the protocol's own work and the lane's saving count too.

Works with the code before the restructure (Gateway, pickled tuples) and after (edge, msgspec).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
import yaml

APP = Path(__file__).resolve().parent / "apps" / "square.py"


def build(root: str, access_log: bool) -> tuple[Any, Any, bool]:
    """The app and scheduler of `root`'s servectl; True when it is the restructured code."""
    sys.path.insert(0, root)
    servectl = importlib.import_module("servectl")
    assert servectl.__file__ is not None and servectl.__file__.startswith(root), servectl.__file__
    from servectl.processes.deployment import Deployment
    from servectl.server.app import build_app

    try:
        from servectl.spec import load_spec  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # a checkout from before the schema and its loading were two modules
        from servectl.spec import load_spec  # type: ignore[attr-defined,no-redef,unused-ignore]

    folder = Path(tempfile.mkdtemp())
    spec_path = folder / "spec.yaml"
    spec = {
        "handler": str(APP),
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 64, "max_wait_ms": 1},
        "limits": {"max_queue": 4096},
        "server": {"access_log": access_log},
    }
    spec_path.write_text(yaml.safe_dump(spec))
    try:  # several models per server (issue 13): a deployment of models, each with its runtime
        from servectl.spec import load_deployment  # type: ignore[import-not-found,unused-ignore]

        deployment = Deployment(load_deployment([spec_path]), plan=lambda _spec: ([], "cpu"))
        scheduler = next(iter(deployment.models.values())).scheduler
    except (ImportError, TypeError):  # one model per server
        deployment = Deployment(load_spec(spec_path), [], "cpu")
        scheduler = deployment.scheduler
    access = logging.getLogger("servectl.access")
    access.handlers[:] = [logging.NullHandler()]
    access.propagate = False
    try:
        from servectl.server.edge import build_edge  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from servectl.server.gateway import Gateway  # type: ignore[import-not-found,unused-ignore]

        return Gateway(deployment, build_app(deployment)), scheduler, False
    return build_edge(deployment, build_app(deployment)), scheduler, True


class FakeWorker:
    """Answers every batch on the next loop turn, through the real wire format."""

    index = 0

    def __init__(self, scheduler: Any, new: bool) -> None:
        self.inflight: dict[int, Any] = {}
        self.scheduler = scheduler
        self.new = new

    @property
    def idle(self) -> bool:
        return not self.inflight

    @property
    def room(self) -> int:  # the scheduler's WorkerPort since pipelined workers
        return 0 if self.inflight else 64

    @property
    def waiting_room(self) -> int:
        return 0

    def send_batch(self, batch_id: int, batch: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        if self.new:
            from servectl.outcome import Reply
            from servectl.worker.messages import Batch, Request, Result, Results, decode_from_worker, encode

            encode(Batch(batch_id, [Request(p.key, p.request_id, p.body, p.route) for p in batch]))
            wire = encode(Results(batch_id, [Result(p.key, Reply(b'{"y":4.0}')) for p in batch], 0.001))
            results: Any = lambda: decode_from_worker(wire).results  # noqa: E731
        else:
            pickle.dumps(("batch", batch_id, [(p.key, p.request_id, p.body, p.route) for p in batch]), 5)
            old = pickle.dumps(("results", batch_id, [(p.key, 200, b'{"y":4.0}') for p in batch], 0.001), 5)
            results = lambda: pickle.loads(old)[2]  # noqa: E731
        loop.call_soon(lambda: self.scheduler.on_results(self, results(), 0.001))

    def send_cancel(self, keys: list[int]) -> None:
        pass


async def one(app: Any, path: str = "/predict", body: bytes = b'{"x": 2.0}') -> None:
    """One POST of `body` to `path`, as uvicorn would hand it to the app (the client never leaves)."""
    headers = [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "extensions": {}}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)


class FakeTransport:
    """A connection's transport that counts its writes and sends nothing."""

    def __init__(self) -> None:
        self.writes = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None:
        pass


RAW = b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{"x": 2.0}'


def connections(app: Any, express: bool) -> list[Any]:
    """64 kept-alive connections of servectl's HTTP protocol in front of `app`."""
    import uvicorn
    from uvicorn.server import ServerState

    from servectl.server.express import ExpressLane
    from servectl.server.http.limits import ConnectionLimits

    try:
        from servectl.server.http import connection_class
    except ImportError:  # a checkout before servectl's own connection layer (server/protocol.py)
        from servectl.server.protocol import protocol_class as connection_class  # type: ignore[no-redef]

    http = connection_class(ConnectionLimits(), ExpressLane(app) if express else None)
    config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False, ws="none", http=http)
    config.load()
    state = ServerState()
    protocols = []
    for _ in range(64):
        protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
        protocol.connection_made(FakeTransport())
        protocols.append(protocol)
    return protocols


async def main(root: str, access_log: bool, rounds: int, via: str) -> None:
    app, scheduler, new = build(root, access_log)
    scheduler.add_worker(FakeWorker(scheduler, new))
    protocols = connections(app, via == "express") if via != "asgi" else []
    gc.collect()
    gc.freeze()
    n = 20000
    for round_ in range(rounds + 1):
        started = time.process_time()
        for _ in range(n // 64):
            if via == "asgi":
                await asyncio.gather(*(one(app) for _ in range(64)))
                continue
            for protocol in protocols:
                protocol.data_received(RAW)
            for _ in range(4):  # queued, sent as a batch, answered, written
                await asyncio.sleep(0)
        if round_:  # the first round warms up
            print(f"{(time.process_time() - started) / (n // 64 * 64) * 1e6:.2f}")
    answered = sum(p.transport.writes for p in protocols)
    assert answered == len(protocols) * (n // 64) * (rounds + 1), f"{answered} answers"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the servectl checkout to measure")
    parser.add_argument("access_log", choices=["on", "off"], help="the access log on or off")
    parser.add_argument("rounds", nargs="?", type=int, default=6, help="measured rounds of 20,000 requests")
    parser.add_argument("--via", choices=["asgi", "express", "task"], default="asgi", help="how requests come in")
    args = parser.parse_args()
    uvloop.install()
    asyncio.run(main(args.root, args.access_log == "on", args.rounds, args.via))
