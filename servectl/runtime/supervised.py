"""The state a model's supervisor keeps of its workers, declared once for the parts of it
that live in their own modules (`restarts.RestartPolicy`, `rollout.RollingReload`);
`supervisor.Supervisor` sets it all."""

from __future__ import annotations

import asyncio
import logging

from servectl.metrics import ModelMetrics
from servectl.runtime.handle import WorkerHandle
from servectl.runtime.scheduler import Scheduler
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot


class Supervised:
    slots: list[WorkerSlot]
    slot_specs: dict[int, Spec]
    workers: dict[int, WorkerHandle]
    restarts: dict[int, list[float]]
    problems: dict[int, str]
    given_up: set[int]
    half_open: set[int]
    scheduler: Scheduler
    metrics: ModelMetrics
    stopping: bool
    restart_count: int
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    _loop: asyncio.AbstractEventLoop | None

    def _spawn(self, slot: WorkerSlot) -> None:
        raise NotImplementedError
