"""What the server needs of a model's runtime, wherever its workers run: this machine's
processes (`local.LocalModel`) or Ray Serve replicas (`ray.RayModel`). The HTTP side talks
to its scheduler (the batcher in front of the workers) and to this interface, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from servectl.handler import HandlerInfo
from servectl.metrics import Metrics, ModelMetrics
from servectl.outcome import Failure
from servectl.runtime.scheduler import Scheduler
from servectl.spec import Spec
from servectl.worker.devices import WorkerSlot

Planner = Callable[[Spec], tuple[list[WorkerSlot], str]]  # a model's worker slots, and how they were chosen


class ModelRuntime(Protocol):
    """One model's runtime, as the deployment, the router and the probes see it."""

    spec: Spec
    name: str
    device_note: str  # how its workers were placed, in words
    scheduler: Scheduler  # what endpoints queue requests on
    metrics: ModelMetrics
    handler_info: HandlerInfo | None  # what its workers reported (None until one is ready)

    @property
    def slots(self) -> list[WorkerSlot]: ...

    @property
    def ready(self) -> bool:
        """Every worker (replica) finished setup."""
        ...

    @property
    def ready_count(self) -> int: ...

    @property
    def given_up(self) -> bool:
        """It cannot answer until a worker is retried (liveness fails when all models say so)."""
        ...

    @property
    def problems(self) -> list[str]: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def begin_stopping(self) -> None:
        """Draining: workers finish what they hold; none is started again."""
        ...

    def kill_all(self) -> None: ...

    def open_requests(self) -> int:
        """Requests queued or held by a worker."""
        ...

    async def reload(self, spec: Spec, plan: Planner) -> dict[str, Any]:
        """Roll the workers to `spec`; ReloadFailed says why not."""
        ...

    def info(self) -> dict[str, Any]:
        """Its part of `GET /info`."""
        ...


class ServedModels(Protocol):
    """What the protocols' routes read of a deployment: its models by name, their metrics,
    and whether all are ready. (The deployment itself assembles them, a layer above.)"""

    @property
    def models(self) -> dict[str, ModelRuntime]: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def ready(self) -> bool: ...


class Peers(Protocol):
    """The other API processes of a server, as the one owning the workers runs them
    (`processes.hub.PeerHub`)."""

    @property
    def all_serving(self) -> bool: ...

    @property
    def problems(self) -> list[str]: ...

    def start(self) -> None: ...

    async def stop(self, timeout: float) -> None: ...

    def drain(self) -> None: ...

    def kill_all(self) -> None: ...


class ReloadError(Exception):
    """A reload that did not happen (or not wholly): `failure` is the answer to give."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure
