"""`runtime.kind: ray` against the local runtime, side by side: the trivial x**2 handler
served by `servectl serve` on each runtime (servectl's front end and batcher; on Ray one
call per batch), and by Ray Serve's own HTTP proxy (`servectl export ray`'s route: one Ray
call per request), with `wrk -t1` at each concurrency, alternating, medians.

Ray needs a loopback-only network namespace here: the script re-runs itself under
`unshare -n` (root) when it is not in one.

    python benchmarks/ray_runtime.py --runs 3 --duration 5 --concurrency 1,8,64
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from models import run_wrk  # noqa: E402

from servectl.bench.runner import free_port  # noqa: E402

SQUARE = HERE / "apps" / "square.py"
PROXY = """
import sys, time, yaml
from pathlib import Path
import ray
from ray import serve
from servectl.spec import load_deployment
from servectl.export.ray import serve_config
from servectl.processes.ray_replica import Replica
config = serve_config(load_deployment([sys.argv[1]]))
app = config["applications"][0]
ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=2, configure_logging=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[2])})
deployment = app["deployments"][0]
serve.run(serve.deployment(Replica).options(**deployment).bind(**app["args"]), name=app["name"],
          route_prefix=app["route_prefix"])
print("READY", flush=True)
time.sleep(10**6)
"""


def spec(kind: str, folder: Path) -> Path:
    data: dict[str, Any] = {
        "name": "square",
        "handler": str(SQUARE),
        "devices": {"accelerator": "cpu", "workers_per_device": 1},
        "batching": {"max_batch_size": 64, "max_wait_ms": 1},
        "limits": {"max_queue": 4096},
        "server": {"access_log": False},
        "runtime": {"kind": kind, "num_cpus": 2},
    }
    path = folder / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start(command: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, json={"x": 2.0}, timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"{command} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds")
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated levels")
    parser.add_argument("--setups", default="local,ray,ray-proxy", help="what to measure")
    args = parser.parse_args()
    if os.environ.get("SERVECTL_RAY_NETNS") != "1":
        inner = f"ip link set lo up && exec env SERVECTL_RAY_NETNS=1 {sys.executable} {' '.join(sys.argv)}"
        sys.exit(subprocess.call(["unshare", "-n", "sh", "-c", inner]))
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "proxy.py").write_text(PROXY)
        for _ in range(args.runs):
            for setup in args.setups.split(","):
                port = free_port()
                url = f"http://127.0.0.1:{port}/predict"
                if setup == "ray-proxy":
                    command = [sys.executable, str(folder / "proxy.py"), str(spec("ray", folder)), str(port)]
                else:
                    command = [
                        sys.executable,
                        "-m",
                        "servectl",
                        "serve",
                        str(spec(setup, folder)),
                        f"server.port={port}",
                    ]
                proc = start(command, url, folder / f"{setup}.log")
                try:
                    run_wrk(url, {"x": 4.0}, 64, 1)  # warm up
                    for level in levels:
                        result = run_wrk(url, {"x": 4.0}, level, args.duration)
                        results.setdefault((setup, level), []).append(result)
                        print(
                            f"{setup:10} c={level:<3} {result['rps']:8.0f} rps mean {result['mean_ms']:.3f} ms "
                            f"p99 {result['p99_ms']:.3f} ms errors {result['errors']}",
                            flush=True,
                        )
                finally:
                    stop(proc)
    print(f"\n{'setup':10} {'c':>4} {'rps':>8} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for (setup, level), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = {k: statistics.median(r[k] for r in runs) for k in ("rps", "mean_ms", "p50_ms", "p99_ms")}
        figures = f"{med['rps']:>8.0f} {med['mean_ms']:>8.3f} {med['p50_ms']:>8.3f} {med['p99_ms']:>8.3f}"
        print(f"{setup:10} {level:>4} {figures}")
    print(json.dumps({f"{s}@{c}": [round(r["rps"]) for r in runs] for (s, c), runs in results.items()}))


if __name__ == "__main__":
    main()
