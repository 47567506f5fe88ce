"""A model on Ray Serve, behind servectl's front end and batcher.

Requests queue on the model's `Scheduler`, as they do locally; its workers are `RayPort`s,
one per replica, each sending one batch at a time through the deployment's handle (Ray
picks the replica). So deadlines, back-pressure, batching (one Ray call per batch, not per
request: a handle call costs milliseconds), metrics and error shapes are the local ones.
A replica that dies fails the batches it held with 503 `worker_crashed`; Ray Serve starts
another. A reload is a Ray Serve redeploy, which rolls the replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from servectl.handler import HandlerInfo
from servectl.metrics import ModelMetrics
from servectl.outcome import Failure
from servectl.runtime.base import Planner
from servectl.runtime.ray import cluster
from servectl.runtime.ray.app import RayPlan, application
from servectl.runtime.rollout import ReloadFailed
from servectl.runtime.scheduler import Pending, Scheduler
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot
from servectl.worker.messages import Batch, Chunk, Ready, Request, Results, Tokens, decode_from_worker, encode

log = logging.getLogger("servectl")


class RayPort:
    """The scheduler's view of one replica's worth of capacity: one batch in flight at a time."""

    def __init__(self, index: int, model: RayModel) -> None:
        self.index = index
        self.model = model
        self.inflight: dict[int, Pending] = {}
        self._call: Any = None  # the open streaming call, cancelled when all its requests are

    @property
    def room(self) -> int:
        return 1 << 30 if self.model.ready and not self.inflight else 0

    waiting_room = 0  # Ray Serve queues calls at the replica itself

    def send_batch(self, batch_id: int, batch: list[Pending]) -> None:
        items = [Request(p.key, p.request_id, p.body, p.route, p.json_length) for p in batch]
        asyncio.get_running_loop().create_task(self._run(encode(Batch(batch_id, items))))

    def send_cancel(self, keys: list[int]) -> None:
        """Ray cancels a whole call: only when every request it holds is cancelled."""
        if self._call is not None and set(self.inflight) <= set(keys):
            self._call.cancel()

    async def _run(self, data: bytes) -> None:
        model = self.model
        try:
            if model.streams:
                self._call = model.handle.options(stream=True).stream.remote(data)
                async for message in self._call:
                    self._deliver(message)
            else:
                for message in await model.handle.run.remote(data):
                    self._deliver(message)
        except Exception as exc:  # the replica died, or Ray could not reach it
            if self.inflight:
                log.error("model %s: a Ray call failed: %s: %s", model.name, type(exc).__name__, exc)
                model.metrics.restart("crashed")
            msg = "the Ray Serve replica holding this request failed; it was not completed"
            held, self.inflight = self.inflight, {}
            for pending in held.values():
                pending.finish(Failure(503, "worker_crashed", msg))
        finally:
            self._call = None
            model.scheduler.dispatch()

    def _deliver(self, data: bytes) -> None:
        scheduler = self.model.scheduler
        match decode_from_worker(data):
            case Chunk(key, body):
                scheduler.on_chunk(self, key, body)
            case Tokens(key, prompt, completion):
                scheduler.on_tokens(self, key, prompt, completion)
            case Results(_, results, predict_s, stages):
                scheduler.on_results(self, results, predict_s, stages)


class RayModel:
    """A model's runtime on Ray Serve (`servectl.runtime.base.ModelRuntime`)."""

    def __init__(self, spec: Spec, metrics: ModelMetrics, on_fatal: Callable[[str], None], replica: type) -> None:
        self.spec = spec
        self.replica = replica  # the class of its replicas (`processes.ray_replica.Replica`)
        self.name = spec.name
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.scheduler = Scheduler(spec.batching, spec.limits.max_queue, metrics)
        self.handler_info: HandlerInfo | None = None
        self.handle: Any = None
        self.device_note = "ray: deploying"
        self.replicas = 0
        self.ports: list[RayPort] = []
        self.reloads = 0
        self._ready = False
        self._problems: list[str] = []
        self._stopping = False
        metrics.gauge("servectl_queue_depth", lambda: {"": len(self.scheduler.queue)})
        metrics.gauge("servectl_worker_inflight", lambda: {str(p.index): len(p.inflight) for p in self.ports})
        metrics.gauge("servectl_workers_ready", lambda: {"": self.ready_count})

    # --- ModelRuntime -------------------------------------------------------------

    @property
    def slots(self) -> list[WorkerSlot]:
        return [WorkerSlot(i, "ray") for i in range(self.replicas)]

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def ready_count(self) -> int:
        return self.replicas if self._ready else 0

    @property
    def given_up(self) -> bool:
        return False  # Ray Serve replaces replicas itself

    @property
    def problems(self) -> list[str]:
        return list(self._problems)

    @property
    def streams(self) -> bool:
        """Whether calls stream (a generator handler, or OpenAI generation)."""
        info = self.handler_info
        return info is not None and (info.streams or any(r.streams for r in info.routes.values()))

    def start(self) -> None:
        asyncio.get_running_loop().create_task(self._deploy(self.spec, first=True))

    async def stop(self) -> None:
        self._stopping = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, cluster.delete, self.name)

    def begin_stopping(self) -> None:
        self._stopping = True

    def kill_all(self) -> None:
        cluster.delete(self.name)

    def open_requests(self) -> int:
        return len(self.scheduler.queue) + sum(len(p.inflight) for p in self.ports)

    async def reload(self, spec: Spec, plan: Planner) -> dict[str, Any]:
        """A Ray Serve redeploy: Ray starts the new replicas, then retires the old ones."""
        started = time.perf_counter()
        try:
            await self._deploy(spec, first=False)
        except Exception as exc:
            raise ReloadFailed(f"Ray Serve could not deploy the new version: {exc}") from None
        self.reloads += 1
        seconds = time.perf_counter() - started
        return {"model": self.name, "reloaded": True, "seconds": round(seconds, 3), "workers": self.replicas}

    def info(self) -> dict[str, Any]:
        data = self.spec.public_dict()
        info = self.handler_info
        return {
            "name": self.name,
            "handler": self.spec.handler,
            "hooks": list(info.hooks) if info else None,
            "backend": self.spec.model.backend,
            "runtime": "ray",
            "devices": {"placement": self.device_note, "workers": [s.label for s in self.slots]},
            "workers": {"total": self.replicas, "ready": self.ready_count, "restarts": 0},
            "ready": self.ready,
            "reloads": self.reloads,
            "batching": data["batching"],
            "limits": data["limits"],
            "api": data["api"],
            "scaling": data["scaling"],
            "auth": {"enabled": bool(self.spec.auth.named_keys() or self.spec.own_api_keys)},
            "stats": {
                "batches": self.scheduler.batches_sent,
                "items": self.scheduler.items_sent,
                "queued": len(self.scheduler.queue),
            },
        }

    # --- deploying ----------------------------------------------------------------

    async def _deploy(self, spec: Spec, first: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            handle, plan, ready = await loop.run_in_executor(None, _deploy_blocking, spec, self.replica)
        except Exception as exc:
            message = f"Ray Serve could not deploy model {spec.name}: {type(exc).__name__}: {exc}"
            if not first:
                raise
            self._problems.append(message)
            self.on_fatal(message)
            return
        self.handle, self.spec, self.device_note = handle, spec, plan.note
        self.handler_info = ready.info
        self.scheduler.batching, self.scheduler.max_queue = spec.batching, spec.limits.max_queue
        ports = plan.replicas if spec.scaling is None else spec.scaling.max_replicas
        self.replicas = plan.replicas if spec.scaling is None else max(spec.scaling.min_replicas, 1)
        for index in range(len(self.ports), ports):
            port = RayPort(index, self)
            self.ports.append(port)
            self.scheduler.add_worker(port)
        self._ready = True
        log.info("model %s on Ray Serve: %s", spec.name, plan.note)
        self.scheduler.dispatch()


def _deploy_blocking(spec: Spec, replica: type) -> tuple[Any, RayPlan, Ready]:
    """Connect, deploy (or redeploy) and ask a replica what it serves; blocking."""
    from ray import serve

    cluster.connect(spec.runtime)
    plan = RayPlan(spec, cluster.gpus())
    with cluster.deploying:
        handle = serve.run(application(spec, plan, replica), name=spec.name, route_prefix=None)
    ready = decode_from_worker(handle.info.remote().result())
    assert isinstance(ready, Ready)
    return handle, plan, ready
