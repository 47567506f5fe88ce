"""Ray and Ray Serve for this process: joined (or started) once, for every model."""

from __future__ import annotations

import logging
import threading

from servectl.spec import RuntimeSpec

log = logging.getLogger("servectl")
_lock = threading.Lock()
_started_here = False  # this process started Ray (address: null): stopping it ends every replica
deploying = threading.Lock()  # one `serve.run` at a time: concurrent ones race in Ray's pickling


def connect(runtime: RuntimeSpec) -> None:
    """Join the cluster at `runtime.address` (or start one: node IP 127.0.0.1, no dashboard,
    at most `runtime.num_cpus`), and Serve with no HTTP proxy: servectl is the front end."""
    global _started_here
    import ray
    from ray import serve

    with _lock:
        if not ray.is_initialized():
            if runtime.address is None:
                _started_here = True
                ray.init(
                    _node_ip_address="127.0.0.1",
                    include_dashboard=False,
                    num_cpus=runtime.num_cpus,
                    namespace=runtime.namespace,
                    configure_logging=False,
                )
                log.info("started a local Ray instance (127.0.0.1)")
            else:
                ray.init(address=runtime.address, namespace=runtime.namespace, configure_logging=False)
                log.info("joined the Ray cluster at %s", runtime.address)
        serve.start(http_options={"location": "NoServer"})


def gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def delete(name: str) -> None:
    """Remove a model's application from a cluster this process joined. A Ray it started is
    shut down at exit (`shutdown`, from the main thread: from another one it aborts the
    process), which ends every replica at once."""
    import ray
    from ray import serve

    with _lock:
        if _started_here or not ray.is_initialized():
            return
        try:
            serve.delete(name)
        except Exception as exc:  # stopping: say it, go on
            log.warning("Ray Serve could not delete %s: %s", name, exc)


def shutdown() -> None:
    """Leave Ray (stopping it if this process started it); from the main thread, at exit."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
