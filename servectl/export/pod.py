"""The pod servectl runs in, whoever schedules it (a Deployment or a KubeRay group).

Locked down the way the image allows: the Dockerfile's non-root uid, no privilege
escalation, no capabilities, a read-only root filesystem with a writable /tmp (HOME points
there for libraries that cache under ~). The spec comes from the ConfigMap, the keys from
the Secret, so neither is baked into the image.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from servectl import __version__
from servectl.export.plan import SPEC_DIR, ExportError, Plan

UID = 10001  # the Dockerfile's `servectl` user
CPU = re.compile(r"^([0-9]+(\.[0-9]{1,3})?|[0-9]+m)$")
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
GPU = "nvidia.com/gpu"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Resources:
    """What one pod asks for: CPU and memory (memory is also its limit), and its GPUs."""

    cpu: str
    memory: str
    gpus: int

    @classmethod
    def of(cls, cpu: str | None, memory: str | None, gpus: int, api_processes: int = 1) -> Resources:
        """--cpu/--memory, checked; by default 1 CPU and 2Gi, or 2 CPUs and 8Gi per GPU, and
        one CPU more for each API process past the first (server.api_processes)."""
        cpu = cpu or str(max(1, 2 * gpus) + api_processes - 1)
        memory = memory or (f"{8 * gpus}Gi" if gpus else "2Gi")
        if not CPU.match(cpu):
            raise ExportError(f"--cpu {cpu!r}: a CPU quantity, e.g. 2, 0.5 or 500m")
        if not MEMORY.match(memory):
            raise ExportError(f"--memory {memory!r}: a memory quantity, e.g. 4Gi or 512Mi")
        return cls(cpu, memory, gpus)

    def manifest(self) -> Manifest:
        # no CPU limit: throttling a server adds latency; memory is limited so a leak restarts the pod
        limits: dict[str, Any] = {"memory": self.memory}
        if self.gpus:
            limits[GPU] = self.gpus
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": limits}


def labels(plan: Plan) -> dict[str, str]:
    return {**selector(plan), "app.kubernetes.io/version": __version__, "app.kubernetes.io/managed-by": "servectl"}


def selector(plan: Plan) -> dict[str, str]:
    return {"app.kubernetes.io/name": "servectl", "app.kubernetes.io/instance": plan.name}


def metadata(plan: Plan, name: str) -> Manifest:
    return {"name": name, "labels": labels(plan)}


def configmap_name(plan: Plan) -> str:
    return f"{plan.name}-spec"


def secret_name(plan: Plan) -> str:
    return f"{plan.name}-keys"


def spec_checksum(plan: Plan) -> str:
    """Changes with the spec files: as a pod annotation it rolls the pods when the ConfigMap changes."""
    digest = hashlib.sha256()
    for copy in plan.files:
        digest.update(f"{copy.key}\0{copy.text}\0".encode())
    return digest.hexdigest()


def environment(plan: Plan) -> list[Manifest]:
    """HOME on the writable /tmp, and each key variable from the Secret (required: no Secret, no start)."""
    env: list[Manifest] = [{"name": "HOME", "value": "/tmp"}]
    for var in plan.keys.all:
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret_name(plan), "key": var}}})
    return env


def volumes(plan: Plan) -> list[Manifest]:
    return [
        {"name": "spec", "configMap": {"name": configmap_name(plan)}},
        {"name": "tmp", "emptyDir": {}},
    ]


def volume_mounts() -> list[Manifest]:
    return [
        {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def container_security() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_basics(plan: Plan) -> Manifest:
    """Pod spec fields every servectl pod has.

    No service links: Kubernetes would set `<SERVICE>_PORT=tcp://...` for every Service of
    the namespace, and a Service named `servectl` would then feed `${oc.env:SERVECTL_PORT}`.
    """
    basics: Manifest = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "volumes": volumes(plan),
    }
    if plan.gpus:
        basics["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return basics
