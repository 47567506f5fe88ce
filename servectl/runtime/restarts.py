"""A slot's restart policy: a crashed or hung worker is started again after a back-off
(0.1 s doubling to 5 s); past `supervisor.max_restarts` within `restart_window_s` the slot
gives up, waits out the window, then is tried once more (half-open: one more failure gives
up again). While every slot has given up, the model refuses requests and liveness fails."""

from __future__ import annotations

import time

from servectl.runtime.supervised import Supervised
from servectl.worker.devices import WorkerSlot


class RestartPolicy(Supervised):
    """The restart half of `supervisor.Supervisor`."""

    @property
    def all_given_up(self) -> bool:
        """Every slot has given up: the process can no longer serve (liveness fails)."""
        return len(self.given_up) == len(self.slots)

    def _schedule_restart(self, slot: WorkerSlot, reason: str) -> None:
        assert self._loop is not None
        now = time.monotonic()
        policy = self.slot_specs[slot.index].supervisor
        window = policy.restart_window_s
        recent = [t for t in self.restarts[slot.index] if now - t < window]
        if slot.index in self.half_open or len(recent) >= policy.max_restarts:
            self._give_up(slot, len(recent))
            return
        recent.append(now)
        self.restarts[slot.index] = recent
        self.restart_count += 1
        self.metrics.restart(reason)
        delay = min(0.1 * 2 ** (len(recent) - 1), 5.0)
        self._loop.call_later(delay, self._spawn, slot)

    def _give_up(self, slot: WorkerSlot, restarts: int) -> None:
        """Stop restarting a slot for restart_window_s, then try it once more (half-open)."""
        assert self._loop is not None
        window = self.slot_specs[slot.index].supervisor.restart_window_s
        cause = self.problems.get(slot.index, "unknown")
        if slot.index in self.half_open:
            reason = f"worker {slot.index} gave up again: it failed on its retry after giving up: {cause}"
        else:
            reason = f"worker {slot.index} gave up after {restarts} restarts in {window:g}s: {cause}"
        self.problems[slot.index] = f"{reason}; next try in {window:g}s"
        self.log.error("%s; next try in %gs", reason, window)
        self.half_open.discard(slot.index)
        self.given_up.add(slot.index)
        if self.all_given_up:
            self.scheduler.refuse("no inference worker is available: " + reason)
        self._loop.call_later(window, self._retry, slot)

    def _retry(self, slot: WorkerSlot) -> None:
        if self.stopping or slot not in self.slots:
            return
        self.given_up.discard(slot.index)
        self.half_open.add(slot.index)
        self.restarts[slot.index] = []
        self.restart_count += 1
        self.metrics.restart("retry")
        self.log.info("worker %d: trying again after giving up", slot.index)
        self._spawn(slot)
