"""`runtime.kind: ray` on Kubernetes: a KubeRay `RayService` (ray.io/v1) instead of a Deployment.

KubeRay runs the Ray cluster (a head and a worker group of the servectl image) and deploys
the Serve applications of `serveConfigV2`, which `servectl.export.ray.serve_config` writes:
the same config `servectl export ray` gives a cluster of one's own. Scaling is Ray's: Serve
adds replicas, KubeRay's autoscaler adds worker pods within the group's bounds.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, cast

import yaml

from servectl.export import pod
from servectl.export.keys import PLACEHOLDER
from servectl.export.output import Document
from servectl.export.plan import SPEC_DIR, ExportError, Plan
from servectl.export.pod import Manifest, Resources
from servectl.spec import DeploymentSpec

DEFAULT_RAY_VERSION = "2.40.0"  # when Ray is not installed here; the image's Ray must match
RAY_PORTS = (("gcs", 6379), ("dashboard", 8265), ("client", 10001))


def serve_config(deployment: DeploymentSpec, gpus: int) -> dict[str, Any]:
    """The Serve config of `servectl.export.ray` (imported here: Ray stays an optional extra);
    `gpus`, when any: those the worker pods surely have, for models with `devices.ids: auto`."""
    try:
        module = importlib.import_module("servectl.export.ray")
    except ModuleNotFoundError as exc:
        if exc.name == "ray":
            raise ExportError("runtime.kind ray needs Ray: pip install 'servectl[ray]'") from None
        raise ExportError(f"runtime.kind ray: cannot build the Serve config ({exc})") from None
    config = module.serve_config(deployment, gpus=float(gpus) if gpus else None, spec_dir=SPEC_DIR)
    return cast(dict[str, Any], config)


def ray_version() -> str:
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return DEFAULT_RAY_VERSION


def rayservice(plan: Plan, image: str, resources: Resources, low: int, high: int) -> Document:
    config = serve_config(plan.deployment, plan.gpus * low)
    text = yaml.safe_dump(config, sort_keys=False)
    if PLACEHOLDER in text:  # the keys were placeholders while exporting: a config holding them holds keys
        raise ExportError("the Serve config holds the API keys: it must leave them to the environment (the Secret)")
    http = config.get("http_options")
    port = int(http.get("port", plan.port)) if isinstance(http, dict) else plan.port
    if plan.keys.all:
        plan.notes.append(
            "RayService: requests reach the models through Ray's HTTP proxy, without servectl's keys, limits "
            f"and batching in front: keep {plan.name}-serve-svc internal (see servectl export ray)"
        )
    version = ray_version()
    if version == DEFAULT_RAY_VERSION:
        plan.notes.append(f"Ray is not installed here: rayVersion {version}; it must be the image's Ray version")
    head_resources = Resources(resources.cpu, resources.memory, 0)
    head_ports = [*({"name": n, "containerPort": p} for n, p in RAY_PORTS), {"name": "serve", "containerPort": port}]
    scaling = plan.scaling is not None
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": pod.metadata(plan, plan.name),
        "spec": {
            "serveConfigV2": text,
            "rayClusterConfig": {
                "rayVersion": version,
                "enableInTreeAutoscaling": scaling,
                "headGroupSpec": {
                    # the dashboard agent must listen beyond loopback: KubeRay submits the config through it;
                    # num-cpus 0 keeps replicas off the head
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": _template(plan, "ray-head", image, head_resources, head_ports, api_access=scaling),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": low,
                        "minReplicas": low,
                        "maxReplicas": high,
                        "rayStartParams": {},
                        "template": _template(plan, "ray-worker", image, resources, [], api_access=False),
                    }
                ],
            },
        },
    }
    comment = (
        "Needs the KubeRay operator (ray.io/v1 CRDs). Ray's HTTP proxy serves the models (KubeRay's\n"
        f"{plan.name}-serve-svc): servectl's auth, limits and batching are not in front of it."
    )
    return Document("rayservice.yaml", manifest, comment)


def _template(
    plan: Plan, name: str, image: str, resources: Resources, ports: list[Manifest], api_access: bool
) -> Manifest:
    """A Ray pod of the servectl image; KubeRay supplies its command (`ray start`) and probes.

    The head keeps its service account token when KubeRay's autoscaler runs beside it: the
    autoscaler asks the API server for worker pods.
    """
    container: Manifest = {
        "name": name,
        "image": image,
        "env": pod.environment(plan),
        "resources": resources.manifest(),
        "securityContext": pod.container_security(),
        "volumeMounts": pod.volume_mounts(),
    }
    if ports:
        container["ports"] = ports
    spec = {**pod.pod_basics(plan), "containers": [container]}
    if api_access:
        del spec["automountServiceAccountToken"]
    return {
        "metadata": {"labels": pod.labels(plan), "annotations": {"servectl.dev/spec-sha256": pod.spec_checksum(plan)}},
        "spec": spec,
    }
