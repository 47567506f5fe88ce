"""A running deployment: the spec plus the runtime parts built from it, in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from servectl import __version__
from servectl.metrics import Metrics
from servectl.runtime.devices import WorkerSlot
from servectl.runtime.scheduler import Scheduler
from servectl.runtime.supervisor import Supervisor
from servectl.spec import Spec

log = logging.getLogger("servectl")


class Deployment:
    """What the HTTP layer talks to: scheduler, supervisor, metrics, and the fatal error."""

    def __init__(self, spec: Spec, slots: list[WorkerSlot], device_note: str) -> None:
        self.spec = spec
        self.slots = slots
        self.device_note = device_note
        self.metrics = Metrics()
        self.scheduler = Scheduler(spec.batching, spec.limits.max_queue, self.metrics)
        self.supervisor = Supervisor(spec, slots, self.scheduler, self.metrics, self._fatal)
        self.metrics.gauge("servectl_queue_depth", "Requests waiting for a worker", self._queue_depth)
        self.metrics.gauge("servectl_worker_inflight", "Requests held by each worker", self._inflight)
        self.metrics.gauge("servectl_workers_ready", "Workers that finished setup", self._ready)
        self.fatal_error: str | None = None
        self.on_fatal: Callable[[str], None] | None = None
        self.draining = False

    def _queue_depth(self) -> dict[str, float]:
        return {"": len(self.scheduler.queue)}

    def _inflight(self) -> dict[str, float]:
        return {str(w.index): len(w.inflight) for w in self.supervisor.workers.values()}

    def _ready(self) -> dict[str, float]:
        return {"": self.supervisor.ready_count}

    def _fatal(self, message: str) -> None:
        if self.fatal_error is None:
            self.fatal_error = message
            log.error("cannot serve: %s", message)
            if self.on_fatal is not None:
                self.on_fatal(message)

    def begin_drain(self) -> None:
        """The first stop signal: in-flight work may finish within `limits.drain_s`, no worker
        is restarted from now on, and whatever is still open after that gets a 503."""
        if self.draining:
            return
        self.draining = True
        self.supervisor.begin_stopping()
        asyncio.get_running_loop().call_later(self.spec.limits.drain_s, self._drain_ran_out)

    def _drain_ran_out(self) -> None:
        limit = self.spec.limits.drain_s
        open_ = len(self.scheduler.queue) + sum(len(w.inflight) for w in self.supervisor.workers.values())
        if open_:
            log.warning("limits.drain_s=%gs ran out: answering %d open request(s) with 503", limit, open_)
            self.metrics.dropped.labels("shutting_down").inc(open_)
        msg = f"the server is shutting down and limits.drain_s={limit:g}s ran out before this request was answered"
        self.scheduler.abandon(msg, "shutting_down")

    def info(self) -> dict[str, object]:
        """`GET /info`: what is deployed and how; never secrets."""
        data = self.spec.public_dict()
        handler = self.supervisor.handler_info
        return {
            "name": self.spec.name,
            "version": __version__,
            "handler": self.spec.handler,
            "hooks": list(handler.hooks) if handler else None,
            "backend": self.spec.model.backend,
            "devices": {"placement": self.device_note, "workers": [s.label for s in self.slots]},
            "workers": {
                "total": len(self.slots),
                "ready": self.supervisor.ready_count,
                "restarts": self.supervisor.restart_count,
            },
            "batching": data["batching"],
            "limits": data["limits"],
            "api": data["api"],
            "auth": {"enabled": bool(self.spec.auth.api_keys)},
            "stats": {
                "batches": self.scheduler.batches_sent,
                "items": self.scheduler.items_sent,
                "queued": len(self.scheduler.queue),
            },
        }
