"""What a spec asks of a cluster: the figures every exported manifest is sized from.

The spec is loaded once, here, with servectl's own loader (so export and `serve` agree on
every value), and reduced to what Kubernetes needs: a port, GPUs, the longest setup and
drain, scaling, the key variables. The files themselves travel as written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from servectl.export.keys import KeyVariables, key_variables, placeholder_keys
from servectl.spec import DeploymentSpec, ScalingSpec, Spec, load_deployment, read_spec_file

SPEC_DIR = "/etc/servectl"  # where the pod mounts the ConfigMap
NAME_LIMIT = 40  # room for suffixes (-keys, -spec) and the names KubeRay derives from it
NAME = re.compile(rf"^[a-z]([-a-z0-9]{{0,{NAME_LIMIT - 2}}}[a-z0-9])?$")
CONFIGMAP_LIMIT = 1_000_000  # bytes: Kubernetes refuses a larger ConfigMap
ENV_READ = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)\}")  # with no default: needed in the pod


class ExportError(Exception):
    """An export option or spec setting that no manifest can honour; the message names it."""


@dataclass(frozen=True)
class SpecCopy:
    """One spec file as written, under the ConfigMap key it is mounted as."""

    key: str
    path: Path
    text: str


@dataclass
class Plan:
    """A deployment reduced to what its manifests are sized from."""

    name: str
    deployment: DeploymentSpec
    files: list[SpecCopy]
    overrides: list[str]  # the user's, passed on to `serve` in the pod
    keys: KeyVariables
    port: int
    gpus: int
    notes: list[str] = field(default_factory=list)

    @property
    def setup_timeout_s(self) -> float:
        return max(m.supervisor.setup_timeout_s for m in self.deployment.models)

    @property
    def drain_s(self) -> float:
        return max(m.limits.drain_s for m in self.deployment.models)

    @property
    def scaling(self) -> ScalingSpec | None:
        """The first model's `scaling:`: one pod serves every model, so one policy scales it."""
        return self.deployment.models[0].scaling

    @property
    def ray(self) -> bool:
        return self.deployment.runtime.kind == "ray"

    def serve_args(self) -> list[str]:
        """`servectl` arguments in the pod: the mounted files, the user's overrides, then where to listen."""
        files = [f"{SPEC_DIR}/{f.key}" for f in self.files]
        return ["serve", *files, *self.overrides, "server.host=0.0.0.0", f"server.port={self.port}"]


def plan_export(
    paths: Sequence[Path], overrides: Sequence[str], name: str | None = None, gpus: int | None = None
) -> Plan:
    """Read, check and load the spec files for export; SpecError or ExportError naming the field at fault."""
    spec_files = [read_spec_file(p) for p in paths]
    keys = key_variables(spec_files, overrides)
    with placeholder_keys(keys.all):
        deployment = load_deployment(list(paths), list(overrides))
    notes: list[str] = []
    port = deployment.server.port
    if port == 0:
        raise ExportError("server.port is 0 (any free port): a pod needs a fixed one, e.g. server.port=8000")
    if port < 1024:
        raise ExportError(
            f"server.port is {port}: the container runs as a non-root user without capabilities and cannot "
            f"bind a port below 1024; serve on e.g. server.port=8000 (a Service can still expose any port)"
        )
    passed = [o for o in overrides if o.split("=", 1)[0].strip().lstrip("+~") not in ("server.host", "server.port")]
    if len(passed) != len(overrides):
        notes.append("server.host and server.port are set by the manifests (0.0.0.0 and the spec's port)")
    plan = Plan(
        name=_name(name, deployment, paths),
        deployment=deployment,
        files=_copies(paths),
        overrides=passed,
        keys=keys,
        port=port,
        gpus=_gpus(deployment.models, gpus, notes),
        notes=notes,
    )
    notes += _portability_notes(plan)
    return plan


def _name(name: str | None, deployment: DeploymentSpec, paths: Sequence[Path]) -> str:
    if name is not None:
        if not NAME.match(name):
            raise ExportError(
                f"--name {name!r}: a Kubernetes name is lowercase letters, digits and '-', starts with a letter, "
                f"ends with a letter or digit, at most {NAME_LIMIT} characters"
            )
        return name
    several = len(deployment.models) > 1
    derived = re.sub(r"[^a-z0-9-]+", "-", (paths[0].stem if several else deployment.models[0].name).lower())
    derived = re.sub(r"^[^a-z]+", "", derived)[:NAME_LIMIT].strip("-")
    return derived or "servectl"


def _copies(paths: Sequence[Path]) -> list[SpecCopy]:
    """The files under distinct ConfigMap keys (their names; a numbered one where two share a name)."""
    copies: list[SpecCopy] = []
    for i, path in enumerate(paths):
        key = re.sub(r"[^-._a-zA-Z0-9]", "_", path.name)
        if any(c.key == key for c in copies):
            key = f"{i}-{key}"
        copies.append(SpecCopy(key, path, path.read_text(encoding="utf-8")))
    size = sum(len(c.text.encode()) for c in copies)
    if size > CONFIGMAP_LIMIT:
        raise ExportError(f"the spec files hold {size} bytes; a ConfigMap holds at most about 1 MB")
    return copies


def gpus_asked(spec: Spec) -> int:
    """GPUs a model's `devices` needs visible in its pod: 0 unless `accelerator: cuda`."""
    devices = spec.devices
    if devices.accelerator != "cuda":
        return 0
    if isinstance(devices.ids, int):
        return devices.ids
    if isinstance(devices.ids, list):
        return max(devices.ids) + 1  # ids are the pod's own GPUs, counted from 0
    return 1


def _gpus(models: list[Spec], asked: int | None, notes: list[str]) -> int:
    """The pod's `nvidia.com/gpu`: the most any model needs (models may share GPUs), or --gpus."""
    needed = max(gpus_asked(m) for m in models)
    if asked is not None:
        if asked < needed:
            cuda = next(m for m in models if gpus_asked(m) == needed)
            raise ExportError(f"--gpus {asked}, but {cuda.name}'s devices need {needed} GPU(s) (devices.ids)")
        return asked
    for m in models:
        if m.devices.accelerator == "cuda" and m.devices.ids == "auto":
            notes.append(f"{m.name}: devices.ids is auto: the pod asks for 1 GPU (--gpus N for more)")
        if m.devices.accelerator == "auto":
            notes.append(f"{m.name}: devices.accelerator is auto: it runs on the CPU in the pod unless --gpus N")
    return needed


def _portability_notes(plan: Plan) -> list[str]:
    """What the pod must find that the ConfigMap does not carry: files, and variables the spec reads."""
    notes = []
    for m in plan.deployment.models:
        if m.model.path and not Path(m.model.path).is_absolute():
            key = f"models.{m.name}.model.path" if len(plan.deployment.models) > 1 else "model.path"
            notes.append(
                f"{m.name}: model.path {m.model.path!r} is relative to the spec file, which the pod reads from "
                f"{SPEC_DIR}: give the path in the image or a volume, e.g. the override {key}=/models/..."
            )
        elif m.model.path:
            notes.append(f"{m.name}: model.path {m.model.path!r} must exist in the image or a mounted volume")
        if m.handler and (m.handler.endswith(".py") or "/" in m.handler):
            notes.append(f"{m.name}: handler {m.handler!r} must be in the image (the pod's working directory is /app)")
    read = dict.fromkeys(v for f in plan.files for v in ENV_READ.findall(f.text) if v not in plan.keys.all)
    if read:
        notes.append(f"the spec needs {', '.join(read)} in the environment (no default): add them to the pod's env")
    if not plan.keys.all:
        notes.append("no auth: the spec sets no API keys, so every route is open to whoever reaches the Service")
    return notes


def startup_failures(setup_timeout_s: float, period_s: int, margin_s: float = 60.0) -> int:
    """A startupProbe's failureThreshold that waits out the longest setup plus start-up margin."""
    return max(1, math.ceil((setup_timeout_s + margin_s) / period_s))
