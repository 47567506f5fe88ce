"""What the HTTP server sees of the deployment it serves: its models and their metrics
(`runtime.base.ServedModels`), the spec, usage, readiness and reloads. The deployment
(`processes.deployment.Deployment`) assembles runtimes, workers and other API processes
and hands itself down as this: the server never imports the layer that builds it."""

from __future__ import annotations

from typing import Any, Protocol

from servectl.protocols import ProtocolSet
from servectl.runtime.base import Peers, ServedModels
from servectl.server.stats import UsageStats
from servectl.spec import DeploymentSpec


class Served(ServedModels, Protocol):
    spec: DeploymentSpec
    usage: UsageStats  # /stats
    protocols: ProtocolSet  # its models' protocols, resolved once
    hub: Peers | None  # the other API processes (server.api_processes > 1), if any
    version: int  # one more after every reload: what workers report may have changed

    @property
    def several(self) -> bool: ...

    @property
    def given_up(self) -> bool:
        """Every model has given up: the process can no longer serve (liveness fails)."""
        ...

    def info(self) -> dict[str, Any]: ...

    async def reload(self, name: str) -> dict[str, Any]:
        """Roll one model to its spec as the files now say; ReloadError says why not."""
        ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...
