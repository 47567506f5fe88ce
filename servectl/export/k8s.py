"""`servectl export k8s`: a spec as plain Kubernetes objects serving the Dockerfile's image.

ConfigMap (the spec files as written), a Secret template (the keys), a Deployment, a
Service, a PodDisruptionBudget and a HorizontalPodAutoscaler; with `runtime.kind: ray`, a
KubeRay RayService replaces the Deployment and the HPA (`kuberay.py`). The figures come
from the spec: probes from `supervisor.setup_timeout_s`, the grace period from
`limits.drain_s`, GPUs from `devices`, replicas from `scaling:`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from servectl import __version__
from servectl.export import pod
from servectl.export.output import Document, write
from servectl.export.plan import ExportError, Plan, startup_failures
from servectl.export.pod import Manifest, Resources

DEFAULT_IMAGE = f"servectl:{__version__}"
PRESTOP_S = 5  # long enough for the Service's endpoints to drop the pod before it drains
GRACE_MARGIN_S = 15  # past the drain: the 503s to what is left, workers' exit, the process's own end
STARTUP_PERIOD_S = 10
CPU_TARGET_PERCENT = 70
MAX_WINDOW_S = 3600  # the longest HPA stabilization window Kubernetes accepts
QUEUE_METRIC = "servectl_queue_depth"


class HpaMetric(str, Enum):
    """What the HorizontalPodAutoscaler scales on."""

    cpu = "cpu"
    queue_depth = "queue-depth"


@dataclass(frozen=True)
class K8sOptions:
    """The command line's choices; None: from the spec."""

    image: str = DEFAULT_IMAGE
    replicas: int | None = None
    max_replicas: int | None = None
    cpu: str | None = None
    memory: str | None = None
    hpa_metric: HpaMetric | None = None


def export(plan: Plan, options: K8sOptions, out: Path) -> tuple[list[Path], list[Path]]:
    """Write the manifests of `plan` into `out`: the files written, and those of an earlier export removed."""
    return write(out, documents(plan, options))


def documents(plan: Plan, options: K8sOptions) -> list[Document]:
    api_processes = plan.deployment.server.api_processes
    resources = Resources.of(options.cpu, options.memory, plan.gpus, api_processes)
    low, high = replica_bounds(plan, options.replicas, options.max_replicas)
    common = [configmap(plan), *([secret_template(plan)] if plan.keys.all else [])]
    if plan.ray:
        from servectl.export.kuberay import rayservice

        if options.hpa_metric is not None:
            raise ExportError("--hpa-metric: with runtime.kind ray, Ray's autoscaler scales (scaling:), not an HPA")
        return [*common, rayservice(plan, options.image, resources, low, high)]
    return [
        *common,
        deployment(plan, options.image, resources),
        service(plan),
        disruption_budget(plan),
        autoscaler(plan, low, high, options.hpa_metric or HpaMetric.cpu),
    ]


def replica_bounds(plan: Plan, replicas: int | None, max_replicas: int | None) -> tuple[int, int]:
    """Fewest and most pods: --replicas/--max-replicas, else `scaling:`, else 1 and 3x the fewest."""
    scaling = plan.scaling
    if scaling is not None and scaling.min_replicas == 0 and replicas is None:
        plan.notes.append("scaling.min_replicas is 0: Kubernetes keeps at least 1 pod (scale-to-zero is alpha)")
    low = replicas if replicas is not None else max(1, scaling.min_replicas) if scaling else 1
    if low < 1:
        raise ExportError(f"--replicas {low}: at least 1")
    high = max_replicas if max_replicas is not None else max(low, scaling.max_replicas) if scaling else 3 * low
    if high < low:
        raise ExportError(f"--max-replicas {high} is below the fewest replicas, {low}")
    return low, high


def configmap(plan: Plan) -> Document:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": pod.metadata(plan, pod.configmap_name(plan)),
        "data": {copy.key: copy.text for copy in plan.files},
    }
    sources = ", ".join(str(c.path) for c in plan.files)
    return Document("configmap.yaml", manifest, f"The spec, as written in {sources}; keys come from the Secret.")


def secret_template(plan: Plan) -> Document:
    """The Secret the pods read their keys from, with empty values to fill in.

    Empty, not a sample key: applied unfilled, servectl refuses to start (keys that resolve to
    nothing are an error), so a forgotten template fails closed instead of opening the API.
    """
    create = [f"  kubectl create secret generic {pod.secret_name(plan)}"]
    create += [f'    --from-literal={var}="$(openssl rand -hex 32)"' for var in plan.keys.all]
    lines = [
        "TEMPLATE: fill in every value, then apply this file yourself (`kubectl apply -f DIR` skips it: its",
        "name does not end in .yaml). Or create the Secret without a file:",
        *[line + " \\" for line in create[:-1]],
        create[-1],
        "Values are comma-separated keys. Left empty, servectl exits at start-up (fails closed).",
        *(f"  {var}: keys for {what}" for var, what in _key_uses(plan)),
    ]
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": pod.metadata(plan, pod.secret_name(plan)),
        "type": "Opaque",
        "stringData": dict.fromkeys(plan.keys.all, ""),
    }
    return Document("secret.yaml.template", manifest, "\n".join(lines))


def _key_uses(plan: Plan) -> list[tuple[str, str]]:
    uses = {var: "the API (auth.api_keys)" for var in plan.keys.api}
    for var in plan.keys.admin:
        uses[var] = "the admin routes (auth.admin_keys)" if var not in uses else "the API and admin routes"
    return list(uses.items())


def container(plan: Plan, image: str, resources: Resources) -> Manifest:
    http: dict[str, Any] = {"port": "http"}
    return {
        "name": "servectl",
        "image": image,
        "command": ["servectl"],
        "args": plan.serve_args(),
        "ports": [{"name": "http", "containerPort": plan.port, "protocol": "TCP"}],
        "env": pod.environment(plan),
        "resources": resources.manifest(),
        # /health fails only when the process can no longer serve; /ready while a model is not
        # (yet) ready. The startup probe holds both back until the longest setup is over.
        "startupProbe": {
            "httpGet": {"path": "/ready", **http},
            "periodSeconds": STARTUP_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": startup_failures(plan.setup_timeout_s, STARTUP_PERIOD_S),
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", **http},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", **http},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        # the endpoint leaves the Service while this runs; SIGTERM (and the drain) follow it
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_S)]}}},
        "securityContext": pod.container_security(),
        "volumeMounts": pod.volume_mounts(),
    }


def grace_period_s(plan: Plan) -> int:
    """The preStop sleep, the longest drain, and a margin: SIGKILL must never cut a drain short."""
    return PRESTOP_S + math.ceil(plan.drain_s) + GRACE_MARGIN_S


def deployment(plan: Plan, image: str, resources: Resources) -> Document:
    """The pods; no `replicas`, so that re-applying never undoes what the HPA chose."""
    annotations = {
        "servectl.dev/spec-sha256": pod.spec_checksum(plan),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(plan.port),
        "prometheus.io/path": "/metrics",
    }
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": pod.metadata(plan, plan.name),
        "spec": {
            "selector": {"matchLabels": pod.selector(plan)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": pod.labels(plan), "annotations": annotations},
                "spec": {
                    **pod.pod_basics(plan),
                    "terminationGracePeriodSeconds": grace_period_s(plan),
                    "containers": [container(plan, image, resources)],
                },
            },
        },
    }
    return Document(
        "deployment.yaml", manifest, f"servectl serving {', '.join(m.name for m in plan.deployment.models)}"
    )


def service(plan: Plan) -> Document:
    manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": pod.metadata(plan, plan.name),
        "spec": {
            "type": "ClusterIP",
            "selector": pod.selector(plan),
            "ports": [{"name": "http", "port": plan.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return Document("service.yaml", manifest)


def disruption_budget(plan: Plan) -> Document:
    """One pod at a time may be evicted: a node drain proceeds, and with 2+ replicas nothing stops serving."""
    manifest = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": pod.metadata(plan, plan.name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": pod.selector(plan)}},
    }
    return Document("pdb.yaml", manifest)


def autoscaler(plan: Plan, low: int, high: int, metric: HpaMetric) -> Document:
    spec: Manifest = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": plan.name},
        "minReplicas": low,
        "maxReplicas": high,
        "metrics": [_metric(plan, metric)],
    }
    scaling = plan.scaling
    if scaling is not None:
        spec["behavior"] = {
            "scaleUp": {"stabilizationWindowSeconds": _window(scaling.upscale_delay_s)},
            "scaleDown": {"stabilizationWindowSeconds": _window(scaling.downscale_delay_s)},
        }
    manifest = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": pod.metadata(plan, plan.name),
        "spec": spec,
    }
    comment = ""
    if metric is HpaMetric.queue_depth:
        comment = (
            f"Scales on the Pods metric {QUEUE_METRIC} (requests waiting for a worker, summed over the pod's\n"
            "models), served by the custom metrics API: e.g. prometheus-adapter with the rule\n"
            f'  seriesQuery: \'{QUEUE_METRIC}{{namespace!="",pod!=""}}\'\n'
            "  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'"
        )
    return Document("hpa.yaml", manifest, comment)


def _metric(plan: Plan, metric: HpaMetric) -> Manifest:
    if metric is HpaMetric.cpu:
        target = {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT}
        return {"type": "Resource", "resource": {"name": "cpu", "target": target}}
    # waiting requests per pod: `scaling.target_ongoing_requests`, else one full batch of the first model
    scaling = plan.scaling
    value = scaling.target_ongoing_requests if scaling else plan.deployment.models[0].batching.max_batch_size
    target = {"type": "AverageValue", "averageValue": quantity(value)}
    return {"type": "Pods", "pods": {"metric": {"name": QUEUE_METRIC}, "target": target}}


def quantity(value: float) -> str:
    """A Kubernetes quantity: `8`, or `2500m` for 2.5."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def _window(seconds: float) -> int:
    return min(MAX_WINDOW_S, math.ceil(seconds))
