"""The real express lane (`express.ExpressLane`) behind servectl's HTTP protocol, in
process: the server's edge and endpoint over a scheduler whose one worker is this test
(it answers each batch as told), raw requests fed to the protocol, writes captured. What
it checks: which requests run without an asyncio task, and that every outcome is answered
in full (status, error shape, request id, metrics) either way."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
import yaml
from uvicorn.server import ServerState

from servectl.outcome import Failure, Outcome, Reply
from servectl.processes.deployment import Deployment
from servectl.runtime.scheduler import Pending
from servectl.server.app import build_app
from servectl.server.edge import RequestContext, build_edge
from servectl.server.express import ExpressLane
from servectl.server.http import connection_class
from servectl.server.http.limits import ConnectionLimits
from servectl.spec import load_deployment
from servectl.worker.messages import Result

from support.fakeloop import Transport

TOOLBOX = Path(__file__).resolve().parents[1] / "handlers" / "toolbox.py"


class Worker:
    """The scheduler's one worker: holds each batch until the test answers it."""

    index = 0

    def __init__(self) -> None:
        self.inflight: dict[int, Pending] = {}
        self.batches: list[list[Pending]] = []

    @property
    def room(self) -> int:
        return 0 if self.inflight else 8

    @property
    def waiting_room(self) -> int:
        return 0

    def send_batch(self, batch_id: int, batch: list[Pending]) -> None:
        self.batches.append(batch)

    def send_cancel(self, keys: list[int]) -> None:
        pass


class Rig:
    def __init__(self, tmp_path: Path, express: bool, **sections: Any) -> None:
        spec = {"handler": str(TOOLBOX), "devices": {"accelerator": "cpu"}, "server": {"access_log": False}}
        spec.update(sections)
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        self.deployment = Deployment(load_deployment([path]), plan=lambda _spec: ([], "cpu"))
        self.model = next(iter(self.deployment.models.values()))
        self.worker = Worker()
        self.model.scheduler.add_worker(self.worker)
        self.edge: RequestContext = build_edge(self.deployment, build_app(self.deployment))
        lane = ExpressLane(self.edge) if express else None
        config = uvicorn.Config(self.edge, log_config=None, ws="none", http=connection_class(ConnectionLimits(), lane))
        config.load()
        self.protocol: Any = config.http_protocol_class(config=config, server_state=ServerState(), app_state={})
        self.transport = Transport()
        self.protocol.connection_made(self.transport)

    def answer(self, outcome: Outcome) -> None:
        """The worker answers every request it holds with `outcome`."""
        results = [Result(key, outcome) for key in list(self.worker.inflight)]
        self.model.scheduler.on_results(self.worker, results, 0.001)

    def count(self, status: str) -> float:
        text = self.deployment.metrics.render()[0].decode()
        return sum(
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith("servectl_requests_total{") and f'status="{status}"' in line
        )


def post(body: bytes, headers: bytes = b"content-type: application/json\r\n") -> bytes:
    return b"POST /predict HTTP/1.1\r\nhost: x\r\n%scontent-length: %d\r\n\r\n%s" % (headers, len(body), body)


def parse(written: bytes) -> tuple[int, dict[bytes, bytes], Any]:
    head, _, body = written.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, orjson.loads(body)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def run(test: Any) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


@pytest.mark.parametrize("express", [True, False], ids=["express", "task"])
def test_a_reply_is_answered_with_a_task_only_off_the_express_lane(tmp_path: Path, express: bool) -> None:
    async def test() -> None:
        rig = Rig(tmp_path, express)
        rig.protocol.data_received(post(b'{"x": 3}', b"content-type: application/json\r\nx-request-id: r-1\r\n"))
        assert len(rig.protocol.tasks) == (0 if express else 1)
        await settle()
        assert [p.body for p in rig.worker.batches[0]] == [b'{"x": 3}']
        rig.answer(Reply(b'{"y": 9.0}'))
        await settle()
        status, headers, body = parse(rig.transport.written)
        assert (status, body) == (200, {"y": 9.0})
        assert headers[b"x-request-id"] == b"r-1" and headers[b"content-type"] == b"application/json"
        assert rig.count("200") == 1  # the edge's observers saw it
        assert not rig.protocol.tasks

    run(test)


@pytest.mark.parametrize(
    ("outcome", "status", "kind"),
    [
        (Failure(500, "predict_error", "boom"), 500, "predict_error"),
        (Failure(422, "invalid_input", "x: not a number"), 422, "invalid_input"),
    ],
)
def test_an_error_on_the_express_lane_is_answered_in_the_error_shape(
    tmp_path: Path, outcome: Failure, status: int, kind: str
) -> None:
    async def test() -> None:
        rig = Rig(tmp_path, express=True)
        rig.protocol.data_received(post(b'{"x": 3}'))
        await settle()
        rig.answer(outcome)
        await settle()
        got, headers, body = parse(rig.transport.written)
        assert got == status and body["error"]["type"] == kind
        assert body["error"]["request_id"] == headers[b"x-request-id"].decode()
        assert rig.count(str(status)) == 1

    run(test)


def test_a_full_queue_is_a_503_with_retry_after_on_the_express_lane(tmp_path: Path) -> None:
    async def test() -> None:
        rig = Rig(tmp_path, express=True, limits={"max_queue": 1})
        rig.protocol.data_received(post(b'{"x": 1}'))  # held by the worker
        await settle()
        second, third = Transport(), Transport()
        for transport in (second, third):
            protocol = type(rig.protocol)(config=rig.protocol.config, server_state=ServerState(), app_state={})
            protocol.connection_made(transport)
            protocol.data_received(post(b'{"x": 2}'))
        await settle()
        status, headers, body = parse(third.written)  # the second waits in the queue: no room for the third
        assert status == 503 and headers[b"retry-after"] == b"1" and body["error"]["type"] == "overloaded"
        assert second.written == b""

    run(test)


def test_what_the_lane_leaves_goes_to_the_task(tmp_path: Path) -> None:
    async def test() -> None:
        rig = Rig(tmp_path, express=True)
        raw = post(b'{"x": 2}')
        head, _, body = raw.partition(b"\r\n\r\n")
        rig.protocol.data_received(head + b"\r\n\r\n")  # the body is still coming
        assert len(rig.protocol.tasks) == 1
        rig.protocol.data_received(body)
        await settle()
        rig.answer(Reply(b'{"y": 4.0}'))
        await settle()
        assert parse(rig.transport.written)[:1] == (200,)
        rig.transport.written = b""
        rig.protocol.data_received(post(b'{"x": 2}', b"content-type: text/plain\r\n"))  # a refused check
        assert len(rig.protocol.tasks) == 1
        await settle()
        assert parse(rig.transport.written)[0] == 415

    run(test)


def test_a_fault_of_servectl_on_the_express_lane_is_a_500_for_that_request_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def test() -> None:
        rig = Rig(tmp_path, express=True)
        endpoint = rig.edge.router.endpoints["/predict"]

        def broken(pending: Pending, body: bytes) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(endpoint, "queue", broken)
        rig.protocol.data_received(post(b'{"x": 3}'))
        status, _, body = parse(rig.transport.written)
        assert status == 500 and body["error"]["type"] == "internal_error"
        assert "a bug" in caplog.text and not rig.transport.closing
        monkeypatch.undo()
        rig.transport.written = b""
        rig.protocol.data_received(post(b'{"x": 3}'))  # the connection serves on
        await settle()
        rig.answer(Reply(b'{"y": 9.0}'))
        await settle()
        assert parse(rig.transport.written)[0] == 200

    run(test)
