"""A model as a Ray Serve application: its deployment's options from the spec (replicas from
`devices`, GPUs per replica, autoscaling from `scaling:`), used by `servectl serve` and
written out by `servectl export ray` (whose `serve deploy` config imports `build`)."""

from __future__ import annotations

from typing import Any

from servectl.spec import Spec

BUILD_IMPORT = "servectl.processes.ray_replica:build"  # `serve deploy` builds a model's application with it
MAX_ONGOING = 2  # batches per replica: one running, one waiting (servectl batches before Ray)


class RayPlan:
    """How many replicas a model gets, and the GPU share of each."""

    def __init__(self, spec: Spec, cluster_gpus: float) -> None:
        devices = spec.devices
        per = devices.workers_per_device
        use_gpu = devices.accelerator == "cuda" or (devices.accelerator == "auto" and cluster_gpus > 0)
        if not use_gpu:
            self.replicas, self.gpus_each = per, 0.0
            why = "asked for" if devices.accelerator == "cpu" else "auto: no GPU in the Ray cluster"
            self.note = f"cpu ({why}), {per} replica(s)"
            return
        if devices.accelerator == "cuda" and cluster_gpus == 0:
            raise ValueError("devices.accelerator is 'cuda' but the Ray cluster has no GPU")
        if devices.ids == "auto":
            gpus = int(cluster_gpus)
        elif isinstance(devices.ids, int):
            gpus = devices.ids
        else:
            gpus = len(devices.ids)  # Ray places replicas itself: ids count GPUs, they do not pin them
        self.replicas, self.gpus_each = gpus * per, 1.0 / per
        self.note = f"cuda: {gpus} GPU(s) of the Ray cluster, {per} replica(s) each"


def deployment_options(spec: Spec, plan: RayPlan) -> dict[str, Any]:
    """`serve.deployment(...).options(...)` for a model (and its `serve deploy` config)."""
    options: dict[str, Any] = {
        "name": spec.name,
        "max_ongoing_requests": MAX_ONGOING,
        "graceful_shutdown_timeout_s": spec.limits.drain_s,
        "health_check_period_s": 5.0,
        "health_check_timeout_s": 30.0,
        "ray_actor_options": {
            "num_cpus": 0.0 if plan.gpus_each else 0.1,
            "num_gpus": plan.gpus_each,
            "runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1"}},
        },
    }
    scaling = spec.scaling
    if scaling is None:
        options["num_replicas"] = plan.replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
            "upscale_delay_s": scaling.upscale_delay_s,
            "downscale_delay_s": scaling.downscale_delay_s,
        }
    return options


def replica_args(spec: Spec) -> dict[str, Any]:
    """What a replica is built from: the model's spec as JSON (without `auth`: replicas check
    no keys, and no key may land in a config file), and where it was read (a cluster needs
    the handler and model files at that path, or a `runtime_env` that puts them there)."""
    data = spec.model_dump(mode="json", exclude={"auth"})
    return {"spec_data": data, "source": spec.source, "base_dir": str(spec.base_dir)}


def application(spec: Spec, plan: RayPlan, replica: type) -> Any:
    """The model's Serve application, ready for `serve.run`; `replica`: the class of its
    replicas (`processes.ray_replica.Replica`, handed down: it runs the worker side)."""
    from ray import serve

    deployment: Any = serve.deployment(replica)  # a class gives a Deployment (typed as a decorator)
    return deployment.options(**deployment_options(spec, plan)).bind(**replica_args(spec))
