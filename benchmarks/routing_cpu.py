"""CPU per request of the API process when routing among N models, in-process (no uvicorn, no
wrk: immune to the noise of a shared machine). The ASGI app servectl runs, driven with fake
HTTP scopes 64 at a time, model m0 answered by a fake worker through the real wire format
(`hotpath.FakeWorker`); every model is the same, with its own route (predict) or all on the
shared OpenAI route (routed by the body's `model`).

    python benchmarks/routing_cpu.py --models 1,10 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
import yaml

from servectl.processes.deployment import Deployment
from servectl.server.app import build_app
from servectl.server.edge import build_edge
from servectl.spec import load_deployment

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hotpath import FakeWorker, one  # noqa: E402

ROUTES = {
    "predict": ("square.py", "/models/m0/predict", b'{"x": 2.0}'),
    "openai": ("embed_len.py", "/v1/embeddings", b'{"model": "m0", "input": "hello"}'),
}


def build(models: int, kind: str) -> tuple[Any, Any]:
    handler = str(HERE / "apps" / ROUTES[kind][0])
    entries = [
        {
            "name": f"m{i}",
            "handler": handler,
            "devices": {"accelerator": "cpu"},
            "batching": {"max_batch_size": 64, "max_wait_ms": 1},
            "limits": {"max_queue": 4096},
            "api": {"kind": kind, **({"path": f"/models/m{i}/predict"} if kind == "predict" else {})},
        }
        for i in range(models)
    ]
    path = Path(tempfile.mkdtemp()) / "spec.yaml"
    path.write_text(yaml.safe_dump({"server": {"access_log": False}, "models": entries}))
    deployment = Deployment(load_deployment([path]), plan=lambda _spec: ([], "cpu"))
    return build_edge(deployment, build_app(deployment)), deployment.models["m0"].scheduler


async def cpu_per_request(models: int, kind: str, requests: int) -> float:
    app, scheduler = build(models, kind)
    scheduler.add_worker(FakeWorker(scheduler, True))
    _, path, body = ROUTES[kind]
    gc.collect()
    gc.freeze()
    for _ in range(requests // 640):  # warm up
        await asyncio.gather(*(one(app, path, body) for _ in range(64)))
    started = time.process_time()
    for _ in range(requests // 64):
        await asyncio.gather(*(one(app, path, body) for _ in range(64)))
    return (time.process_time() - started) / (requests // 64 * 64) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="1,10", help="comma-separated model counts")
    parser.add_argument("--kinds", default="predict,openai", help="routes: predict, openai or both")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--requests", type=int, default=12800, help="requests per measurement")
    args = parser.parse_args()
    uvloop.install()
    counts = [int(n) for n in args.models.split(",")]
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for kind in args.kinds.split(","):
            for count in counts:
                us = asyncio.run(cpu_per_request(count, kind, args.requests))
                results.setdefault((kind, count), []).append(us)
                print(f"{kind:8} {count:3} models {us:7.2f} us/request", flush=True)
    print(f"\n{'route':8} {'models':>6} {'us/req':>8} {'+us vs 1':>9}")
    for (kind, count), runs in results.items():
        base = results[(kind, counts[0])]
        added = statistics.median(r - b for r, b in zip(runs, base, strict=True))
        print(f"{kind:8} {count:>6} {statistics.median(runs):>8.2f} {added:>9.2f}")
    print(f"(median of {args.rounds} alternating rounds; +us: median of each round's difference to {counts[0]} model)")


if __name__ == "__main__":
    main()
