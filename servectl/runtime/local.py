"""One model served by worker processes on this machine: its scheduler, its supervisor, its
metrics, and what the server asks of it (readiness, drain, reload, /info)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from servectl.handler import HandlerInfo
from servectl.metrics import ModelMetrics
from servectl.runtime.base import ModelRuntime, Planner
from servectl.runtime.gpu_usage import GpuUsage
from servectl.runtime.launch import WorkerLauncher
from servectl.runtime.rollout import ReloadFailed
from servectl.runtime.scheduler import Scheduler
from servectl.runtime.supervisor import Supervisor
from servectl.runtime.usage import usage
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot

log = logging.getLogger("servectl")


class LocalModel:
    """A model's runtime: its own queue, batcher, limits and workers, isolated from the others."""

    def __init__(
        self,
        spec: Spec,
        slots: list[WorkerSlot],
        device_note: str,
        metrics: ModelMetrics,
        on_fatal: Callable[[str], None],
        launcher: WorkerLauncher,
        log_prefix: str = "",
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.device_note = device_note
        self.metrics = metrics
        self.scheduler = Scheduler(spec.batching, spec.limits.max_queue, metrics)
        self.supervisor = Supervisor(spec, slots, self.scheduler, metrics, on_fatal, launcher, log_prefix)
        self.reloads = 0
        metrics.gauge("servectl_queue_depth", self._queue_depth)
        metrics.gauge("servectl_worker_inflight", self._inflight)
        metrics.gauge("servectl_workers_ready", self._ready)
        metrics.gauge("servectl_worker_cpu_seconds", lambda: self._usage(0))
        metrics.gauge("servectl_worker_resident_bytes", lambda: self._usage(1))
        self.gpu = GpuUsage.open() if any(s.accelerator == "cuda" for s in slots) else None
        if self.gpu is not None:
            metrics.gauge("servectl_worker_gpu_memory_bytes", self._gpu_memory)
            metrics.gauge("servectl_worker_gpu_utilization_ratio", self._gpu_utilization)

    @property
    def slots(self) -> list[WorkerSlot]:
        return self.supervisor.slots

    @property
    def handler_info(self) -> HandlerInfo | None:
        return self.supervisor.handler_info

    @handler_info.setter
    def handler_info(self, info: HandlerInfo | None) -> None:
        self.supervisor.handler_info = info

    @property
    def ready_count(self) -> int:
        return self.supervisor.ready_count

    def start(self) -> None:
        self.supervisor.start()

    async def stop(self) -> None:
        await self.supervisor.stop()

    def begin_stopping(self) -> None:
        self.supervisor.begin_stopping()

    def kill_all(self) -> None:
        self.supervisor.kill_all()

    @property
    def ready(self) -> bool:
        return self.supervisor.all_ready

    @property
    def given_up(self) -> bool:
        """Every worker slot has given up: this model cannot answer until one is retried."""
        return self.supervisor.all_given_up

    @property
    def problems(self) -> list[str]:
        return [self.supervisor.problems[i] for i in sorted(self.supervisor.problems)]

    def _queue_depth(self) -> dict[str, float]:
        return {"": len(self.scheduler.queue)}

    def _inflight(self) -> dict[str, float]:
        workers = [*self.supervisor.workers.values(), *self.supervisor.retiring]
        return {str(w.index): len(w.inflight) for w in workers}

    def _usage(self, which: int) -> dict[str, float]:
        """Each live worker process's CPU seconds (0) or resident bytes (1), from /proc."""
        found = {}
        for w in [*self.supervisor.workers.values(), *self.supervisor.retiring]:
            measured = usage(w.pid) if w.pid is not None and not w.exited else None
            if measured is not None:
                found[str(w.index)] = float(measured[which])
        return found

    def _live_on_gpu(self) -> list[tuple[str, int, int]]:
        """(worker label, its GPU, its pid) of each live worker on a GPU."""
        workers = [*self.supervisor.workers.values(), *self.supervisor.retiring]
        return [
            (str(w.index), w.slot.gpu_id, w.pid)
            for w in workers
            if w.slot.gpu_id is not None and w.pid is not None and not w.exited
        ]

    def _gpu_memory(self) -> dict[str, float]:
        assert self.gpu is not None
        found = {label: self.gpu.memory_bytes(gpu, pid) for label, gpu, pid in self._live_on_gpu()}
        return {label: value for label, value in found.items() if value is not None}

    def _gpu_utilization(self) -> dict[str, float]:
        assert self.gpu is not None
        found = {label: self.gpu.utilization(gpu) for label, gpu, _ in self._live_on_gpu()}
        return {label: value for label, value in found.items() if value is not None}

    def _ready(self) -> dict[str, float]:
        return {"": self.supervisor.ready_count}

    def open_requests(self) -> int:
        """Requests queued or held by a worker."""
        held = [*self.supervisor.workers.values(), *self.supervisor.retiring]
        return len(self.scheduler.queue) + sum(len(w.inflight) for w in held)

    async def reload(self, spec: Spec, plan: Planner) -> dict[str, Any]:
        """Roll this model's workers to `spec` (its entry re-read); ReloadFailed says why not."""
        slots, note = plan(spec)
        started = time.perf_counter()
        log.info("reloading model %s: rolling %d worker(s)", self.name, len(slots))
        try:
            await self.supervisor.reload(spec, slots)
        except ReloadFailed as exc:
            log.error("reload of model %s failed: %s", self.name, exc)
            raise
        self.spec, self.device_note = spec, note  # the endpoints read limits and keys from here
        self.scheduler.batching = spec.batching  # (workers split a batch larger than their own bound)
        self.scheduler.max_queue = spec.limits.max_queue
        self.reloads += 1
        seconds = time.perf_counter() - started
        log.info("model %s reloaded in %.2fs", self.name, seconds)
        return {"model": self.name, "reloaded": True, "seconds": round(seconds, 3), "workers": len(slots)}

    def info(self) -> dict[str, Any]:
        """This model's part of `GET /info`: what is deployed and how; never secrets."""
        return model_info(self, self.supervisor.restart_count, self.reloads)


def model_info(model: ModelRuntime, restarts: int, reloads: int) -> dict[str, Any]:
    """A model's part of `GET /info`, wherever its workers run."""
    spec = model.spec
    data = spec.public_dict()
    handler = model.handler_info
    return {
        "name": spec.name,
        "handler": spec.handler,
        "hooks": list(handler.hooks) if handler else None,
        "backend": spec.model.backend,
        "devices": {"placement": model.device_note, "workers": [s.label for s in model.slots]},
        "workers": {"total": len(model.slots), "ready": model.ready_count, "restarts": restarts},
        "ready": model.ready,
        "reloads": reloads,
        "batching": data["batching"],
        "limits": data["limits"],
        "api": data["api"],
        "auth": {"enabled": bool(spec.auth.named_keys() or spec.own_api_keys), "own_keys": bool(spec.own_api_keys)},
        "stats": {
            "batches": model.scheduler.batches_sent,
            "items": model.scheduler.items_sent,
            "queued": len(model.scheduler.queue),
        },
    }
