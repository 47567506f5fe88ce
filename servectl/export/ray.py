"""`servectl export ray`: the Ray Serve config (`serve deploy FILE`) of a deployment, for a
production Ray cluster (KubeRay's RayService embeds it as `serveConfigV2`).

Each model is an application whose replicas run the same worker code as `servectl serve`
(`servectl.processes.ray_replica:build`); Ray's HTTP proxy sends `POST {api.path}` to its
replicas' `__call__`, one request per call. For servectl's routes, auth, limits and
batching in front (one Ray call per batch), run `servectl serve SPEC runtime.kind=ray
runtime.address=auto` on the cluster instead: it deploys the same applications.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from servectl.runtime.ray.app import BUILD_IMPORT, RayPlan, deployment_options, replica_args
from servectl.spec import DeploymentSpec


def serve_config(spec: DeploymentSpec, gpus: float | None = None, spec_dir: str | None = None) -> dict[str, Any]:
    """The config `serve deploy` reads. `gpus`: the cluster's GPUs, for models with
    `devices.ids: auto` (default: what the models' `devices` name, else none). `spec_dir`:
    where the spec files are on the cluster (default: where they are here); handler and
    model paths are found from there, then from the replicas' working directory."""
    applications = []
    for model in spec.models:
        cluster_gpus = gpus if gpus is not None else _named_gpus(model.devices.ids, model.devices.accelerator)
        options = deployment_options(model, RayPlan(model, cluster_gpus))
        args = replica_args(model)
        if spec_dir is not None:
            args.update(source=str(PurePosixPath(spec_dir) / Path(model.source).name), base_dir=spec_dir)
        applications.append(
            {
                "name": model.name,
                "route_prefix": model.api.path,
                "import_path": BUILD_IMPORT,
                "args": args,
                "deployments": [options],
            }
        )
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": spec.server.port},
        "applications": applications,
    }


def _named_gpus(ids: object, accelerator: str) -> float:
    if isinstance(ids, list):
        return float(len(ids))
    if isinstance(ids, int):
        return float(ids)
    return 1.0 if accelerator == "cuda" else 0.0
