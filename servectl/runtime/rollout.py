"""A reload rolls a model's workers to a new version of its spec, one at a time: a new
worker runs setup while the old ones serve; once it is ready it takes batches and an old
worker stops taking them, finishes what it holds and stops. The first new worker is the
canary: if its setup fails, nothing changed."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import replace

from servectl.runtime.handle import WorkerHandle
from servectl.runtime.supervised import Supervised
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot
from servectl.worker.messages import Stop


class ReloadFailed(Exception):
    """A reload could not roll every worker; the message says what serves now."""


class RollingReload(Supervised):
    """The reload half of `supervisor.Supervisor`."""

    spec: Spec
    reloading: bool
    retiring: set[WorkerHandle]
    on_worker: Callable[[WorkerHandle, bool], None] | None
    _indices: itertools.count[int]
    _probation: dict[int, asyncio.Future[None]]
    _setup_timers: dict[int, asyncio.TimerHandle]

    async def reload(self, spec: Spec, slots: list[WorkerSlot]) -> None:
        """Roll the workers to `spec` on `slots` (planned from its devices), one at a time;
        ReloadFailed says what went wrong and what serves now."""
        if self.reloading:
            raise ReloadFailed("a reload of this model is already running")
        if self.stopping:
            raise ReloadFailed("the server is stopping")
        self.reloading = True
        try:
            old = list(self.slots)
            fresh = [replace(slot, index=next(self._indices)) for slot in slots]
            for rolled, slot in enumerate(fresh):
                try:
                    await self._start_on_probation(slot, spec)
                except ReloadFailed as exc:
                    if rolled == 0:
                        raise ReloadFailed(f"{exc}; the old workers keep serving, nothing changed") from None
                    raise ReloadFailed(
                        f"{exc}; {rolled} of {len(fresh)} workers run the new version, {len(old)} the old one"
                    ) from None
                if rolled == 0:
                    self.spec = spec
                if old:
                    self._retire(old.pop(0))
            for slot in old:  # the new version has fewer workers
                self._retire(slot)
        finally:
            self.reloading = False

    async def _start_on_probation(self, slot: WorkerSlot, spec: Spec) -> None:
        """Start a worker of the new version; return once it is ready (it then takes batches),
        raise ReloadFailed if its setup fails (it is ended)."""
        assert self._loop is not None
        waiting = self._probation[slot.index] = self._loop.create_future()
        self.slot_specs[slot.index] = spec
        self.restarts[slot.index] = []
        self._spawn(slot)
        try:
            await waiting
        except ReloadFailed:
            self.slot_specs.pop(slot.index, None)
            self.restarts.pop(slot.index, None)
            self.problems.pop(slot.index, None)
            worker = self.workers.pop(slot.index, None)
            if worker is not None:
                worker.kill()
            raise
        finally:
            self._probation.pop(slot.index, None)
        self.slots.append(slot)

    def _end_probation(self, index: int, error: str | None) -> bool:
        """A new worker of a reload is ready, or failed (`error`); False for other workers."""
        waiting = self._probation.get(index)
        if waiting is None:
            return False
        if not waiting.done():
            if error is None:
                waiting.set_result(None)
            else:
                waiting.set_exception(ReloadFailed(f"a worker of the new version failed: {error}"))
        return True

    def _retire(self, slot: WorkerSlot) -> None:
        """An old slot's worker takes no more batches, finishes what it holds, then stops."""
        self.slots.remove(slot)
        for held in (self.slot_specs, self.restarts, self.problems):
            held.pop(slot.index, None)
        self.given_up.discard(slot.index)
        self.half_open.discard(slot.index)
        timer = self._setup_timers.pop(slot.index, None)
        if timer:
            timer.cancel()
        self.metrics.restart("reload")
        worker = self.workers.pop(slot.index, None)
        if worker is None or worker.gone:
            return
        worker.retiring = True
        self.retiring.add(worker)
        self.scheduler.retire_worker(worker)
        if self.on_worker is not None:
            self.on_worker(worker, False)
        if not worker.inflight:
            self._stop_retired(worker)

    def _stop_retired(self, worker: WorkerHandle) -> None:
        worker.stop_watchdog()
        if worker.run is not None and worker.run.attached:
            worker.run.send(Stop())
        else:
            worker.kill()
