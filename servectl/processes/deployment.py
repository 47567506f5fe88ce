"""A running deployment: every model the server serves, each with its own runtime, and what
the server asks of them all (start, drain, stop, readiness, reload, /info)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from servectl import __version__, protocols
from servectl.metrics import Metrics
from servectl.outcome import Failure
from servectl.runtime.base import ModelRuntime, Peers, Planner, ReloadError
from servectl.runtime.launch import ProcessLauncher, WorkerLauncher
from servectl.runtime.local import LocalModel
from servectl.runtime.remote import OwnerLink
from servectl.runtime.rollout import ReloadFailed
from servectl.runtime.scheduler import CUT_AFTER_S
from servectl.server.stats import UsageStats
from servectl.spec import DeploymentSpec, Spec, SpecError, load_deployment
from servectl.worker.devices import WorkerSlot, count_gpus, plan_slots

log = logging.getLogger("servectl")


class DevicePlanner:
    """Plans each model's worker slots from its `devices:`; GPUs are counted once (the count
    runs torch in a subprocess: seconds), when a model first asks for them."""

    def __init__(self, gpus: tuple[int, str] | None = None) -> None:
        self._gpus = gpus  # (count, why none): counted on first use unless given

    def __call__(self, spec: Spec) -> tuple[list[WorkerSlot], str]:
        if spec.devices.accelerator == "cpu":
            return plan_slots(spec.devices)
        if self._gpus is None:
            self._gpus = count_gpus()
        return plan_slots(spec.devices, *self._gpus)


class Deployment:
    """The models of one server by name, their metrics, and the fatal error that stops it."""

    def __init__(
        self,
        spec: DeploymentSpec,
        plan: Planner | None = None,
        launcher: WorkerLauncher | None = None,
        reload_from: tuple[Sequence[Path], Sequence[str]] | None = None,
        owner: OwnerLink | None = None,
    ) -> None:
        self.spec = spec
        self.owner = owner  # set in an API process that does not own the workers (api_processes)
        self.hub: Peers | None = None  # set in the one that does, when there are others (`hub.PeerHub`)
        self.plan = plan = plan or DevicePlanner()
        launcher = launcher or ProcessLauncher(protocols.ADAPTERS)
        self.metrics = Metrics(max(m.limits.timeout_s for m in spec.models))
        self.usage = UsageStats()  # /stats
        self.protocols = protocols.ProtocolSet(spec.models)  # resolved once: what every request asks of them
        self.models: dict[str, ModelRuntime] = {}
        for model_spec in spec.models:
            metrics = self.metrics.model(model_spec.name)
            if owner is not None:
                self.models[model_spec.name] = owner.model(model_spec, metrics)
                continue
            if spec.runtime.kind == "ray":
                from servectl.processes.ray_replica import Replica  # the `ray` extra: never imported locally
                from servectl.runtime.ray.model import RayModel

                self.models[model_spec.name] = RayModel(model_spec, metrics, self._fatal, Replica)
                continue
            slots, note = plan(model_spec)
            prefix = f"{model_spec.name}: " if len(spec.models) > 1 else ""  # which model a log line is of
            self.models[model_spec.name] = LocalModel(model_spec, slots, note, metrics, self._fatal, launcher, prefix)
        self.reload_from = reload_from  # the spec files and overrides a reload re-reads
        self.fatal_error: str | None = None
        self.on_fatal: Callable[[str], None] | None = None  # called once with the fatal error
        self.draining = False
        self.version = 0  # one more after every reload: what workers report may have changed

    @property
    def several(self) -> bool:
        return len(self.models) > 1

    @property
    def ready(self) -> bool:
        serving = self.hub is None or self.hub.all_serving  # the other API processes, if any
        return serving and all(model.ready for model in self.models.values())

    @property
    def given_up(self) -> bool:
        """Every model has given up: the process can no longer serve (liveness fails)."""
        return all(model.given_up for model in self.models.values())

    def _fatal(self, message: str) -> None:
        if self.fatal_error is None:
            self.fatal_error = message
            log.error("cannot serve: %s", message)
            if self.on_fatal is not None:
                self.on_fatal(message)

    # --- life ---------------------------------------------------------------------

    def start(self) -> None:
        if self.metrics.shared is not None:
            self.metrics.shared.start()
        for model in self.models.values():
            model.start()
        if self.hub is not None:
            self.hub.start()
        if self.owner is not None:
            self.owner.start()

    async def stop(self) -> None:
        if self.hub is not None:  # the other API processes first: they may hold work in the workers
            await self.hub.stop(self.drain_s + CUT_AFTER_S + 5.0)
        await asyncio.gather(*(model.stop() for model in self.models.values()))
        if self.metrics.shared is not None:
            self.metrics.shared.stop()

    def kill_all(self) -> None:
        if self.hub is not None:
            self.hub.kill_all()
        for model in self.models.values():
            model.kill_all()

    @property
    def drain_s(self) -> float:
        """The longest drain of any model: how long stopping may take."""
        return max(model.spec.limits.drain_s for model in self.models.values())

    def begin_drain(self) -> None:
        """The first stop signal: in-flight work may finish within each model's
        `limits.drain_s`, no worker is restarted from now on, and whatever is still open
        after that gets a 503."""
        if self.draining:
            return
        self.draining = True
        if self.hub is not None:
            self.hub.drain()
        loop = asyncio.get_running_loop()
        for model in self.models.values():
            model.begin_stopping()
            loop.call_later(model.spec.limits.drain_s, self._drain_ran_out, model)

    def _drain_ran_out(self, model: ModelRuntime) -> None:
        limit = model.spec.limits.drain_s
        open_ = model.open_requests()
        if open_:
            log.warning(
                "limits.drain_s=%gs ran out: answering %d open request(s) of %s with 503", limit, open_, model.name
            )
            model.metrics.drop("shutting_down", open_)
        msg = f"the server is shutting down and limits.drain_s={limit:g}s ran out before this request was answered"
        model.scheduler.abandon(msg, "shutting_down")

    # --- reload -------------------------------------------------------------------

    async def reload(self, name: str) -> dict[str, Any]:
        """Re-read model `name`'s entry from the spec files and roll its workers to it;
        ReloadError (with the answer to give) when that cannot be done."""
        model = self.models.get(name)
        if model is None:
            msg = f"no model {name!r} here; served: {', '.join(self.models)}"
            raise ReloadError(Failure(404, "model_not_found", msg))
        if self.draining:
            raise ReloadError(Failure(503, "shutting_down", "the server is shutting down"))
        if self.owner is not None:  # the workers are the first API process's to roll
            asked = await self.owner.ask("reload", name)
            if asked.failure is not None:
                raise ReloadError(asked.failure)
            self.version += 1
            return asked.answer or {}
        spec = self._reread().get(name)
        if spec is None:
            msg = f"model {name!r} is no longer in the spec: removing a model needs a restart"
            raise ReloadError(Failure(422, "invalid_spec", msg))
        if spec.api != model.spec.api:
            msg = f"model {name}: api.* changed, but a model's routes are fixed while serving: restart the server"
            raise ReloadError(Failure(409, "reload_refused", msg))
        try:
            answer = await model.reload(spec, self.plan)
        except ReloadFailed as exc:
            busy = "already running" in str(exc)
            raise ReloadError(Failure(409 if busy else 500, "reload_failed", f"model {name}: {exc}")) from None
        except Exception as exc:  # planning devices: the GPUs it names are not here
            raise ReloadError(Failure(500, "reload_failed", f"model {name}: {exc}")) from None
        self.version += 1
        return answer

    async def reload_all(self) -> list[dict[str, Any]]:
        """Reload every model (SIGHUP), side by side; each answer or error by model."""

        async def one(name: str) -> dict[str, Any]:
            try:
                return await self.reload(name)
            except ReloadError as exc:
                log.error("reload of model %s: %s", name, exc.failure.message)
                return {"model": name, "reloaded": False, "error": exc.failure.message}

        return list(await asyncio.gather(*(one(name) for name in self.models)))

    def _reread(self) -> dict[str, Spec]:
        """The served models' entries as the spec files say now."""
        if self.reload_from is None:
            raise ReloadError(Failure(409, "reload_failed", "this deployment was not loaded from spec files"))
        paths, overrides = self.reload_from
        try:
            fresh = load_deployment(list(paths), list(overrides))
        except SpecError as exc:
            detail = [str(issue) for issue in exc.issues]
            msg = f"the spec no longer loads ({len(detail)} problem(s)): {detail[0]}"
            raise ReloadError(Failure(422, "invalid_spec", msg, detail)) from None
        models = {spec.name: spec for spec in fresh.models}
        for name in self.models.keys() - models.keys():
            log.warning("model %s is no longer in the spec: removing a model needs a restart", name)
        for name in models.keys() - self.models.keys():
            log.warning("model %s is new in the spec: adding a model needs a restart", name)
        return models

    def counts(self) -> dict[str, Any]:
        """What this API process shares with the others (api_processes): its metrics, its
        usage, and, from the one that owns the workers, each model's restarts and reloads."""
        counts = {"metrics": self.metrics.dump(), "usage": self.usage.dump()}
        if self.owner is None:
            counts["owner"] = {
                name: {"restarts": m.supervisor.restart_count, "reloads": m.reloads}
                for name, m in self.models.items()
                if isinstance(m, LocalModel)
            }
        return counts

    # --- /info --------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """`GET /info`: every model (and, with one model, its fields at the top level too)."""
        if self.owner is not None and self.metrics.shared is not None:  # the owner's figures
            for counts in self.metrics.shared.snapshot():
                for name, state in counts.get("owner", {}).items():
                    self.owner.models[name].restarts = state["restarts"]
                    self.owner.models[name].reloads = state["reloads"]
        models = [model.info() for model in self.models.values()]
        top = {} if self.several else dict(models[0])
        answer = {**top, "version": __version__, "ready": self.ready, "models": models}
        if self.spec.server.api_processes > 1:  # which one answered
            index = self.owner.index if self.owner is not None else 0
            answer["api_process"] = {"index": index, "pid": os.getpid(), "of": self.spec.server.api_processes}
        return answer
