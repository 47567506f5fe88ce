"""Several models in one server: what routing among them costs, and how long a reload takes.

Routing: servers of 1 and of N models (each the x**2 handler, one worker each), loaded on
model m0's route with `wrk -t1` at each concurrency; and the same for N OpenAI-kind models
on the shared `/v1/embeddings` route (routed by the body's `model`: the API process reads
that field). Settings alternate within each round; the table shows medians, and the added
latency per request at c=1 is the difference of the mean latencies, median over rounds.

Reload: a 2-worker server under a steady load (--rate requests/s, httpx) while
`POST /admin/models/m0/reload` rolls both workers; prints the reload's duration and the
load's failures (there should be none).

    python benchmarks/models.py --models 10 --runs 3 --duration 5 --concurrency 1,64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
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

from servectl.bench.runner import free_port

HERE = Path(__file__).resolve().parent
LUA = HERE / "apps" / "post_body.lua"
ADMIN = "bench-admin"
KINDS = {
    "predict": ("square.py", "/models/m0/predict", {"x": 4.0}),
    "openai": ("embed_len.py", "/v1/embeddings", {"model": "m0", "input": "hello"}),
}


def deployment(kind: str, models: int, workers: int = 1) -> dict[str, Any]:
    handler, _, _ = KINDS[kind]
    entry = {
        "handler": str(HERE / "apps" / handler),
        "devices": {"accelerator": "cpu", "workers_per_device": workers},
        "batching": {"max_batch_size": 64, "max_wait_ms": 1},
        "limits": {"max_queue": 4096},
        "api": {"kind": kind, **({"path": "/models/m0/predict"} if kind == "predict" else {})},
    }
    entries = [{**entry, "name": f"m{i}"} for i in range(models)]
    for i, e in enumerate(entries[1:], 1):
        if kind == "predict":
            e["api"] = {"kind": kind, "path": f"/models/m{i}/predict"}
    return {
        "server": {"access_log": False},
        "auth": {"admin_keys": ADMIN},
        "models": entries,
    }


class Server:
    def __init__(self, spec: dict[str, Any], folder: Path) -> None:
        self.port = free_port()
        path = folder / "spec.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        self.log = folder / "server.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "servectl", "serve", str(path), f"server.port={self.port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def run_wrk(url: str, body: dict[str, Any], concurrency: int, duration: float) -> dict[str, float]:
    env = {**os.environ, "BENCH_BODY": json.dumps(body)}
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(LUA), url]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    match = re.search(r"^RESULT (.*)$", out, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    result: dict[str, float] = json.loads(match.group(1))
    result["rps"] = result["requests"] / result["seconds"]
    return result


def routing(args: argparse.Namespace) -> None:
    levels = [int(c) for c in args.concurrency.split(",")]
    counts = [1, args.models]
    runs: dict[tuple[str, int, int], list[dict[str, float]]] = {}
    for _ in range(args.runs):
        for kind in args.kinds.split(","):
            _, path, body = KINDS[kind]
            for count in counts:
                with tempfile.TemporaryDirectory() as folder:
                    server = Server(deployment(kind, count), Path(folder))
                    try:
                        run_wrk(server.url + path, body, 64, 1)  # warm up
                        for level in levels:
                            result = run_wrk(server.url + path, body, level, args.duration)
                            if result["errors"]:
                                raise RuntimeError(f"{result['errors']} errors: {server.log.read_text()[-2000:]}")
                            runs.setdefault((kind, count, level), []).append(result)
                            print(
                                f"{kind:8} {count:3} models c={level:<3} {result['rps']:8.0f} rps "
                                f"mean {result['mean_ms']:.3f} ms p99 {result['p99_ms']:.3f} ms",
                                flush=True,
                            )
                    finally:
                        server.stop()
    print(
        f"\n{'route':8} {'c':>4} {'models':>6} {'rps':>8} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'rps x 1':>8} {'+us/req':>8}"
    )
    for kind in args.kinds.split(","):
        for level in levels:
            for count in counts:
                mine, one = runs[(kind, count, level)], runs[(kind, 1, level)]
                ratio = statistics.median(m["rps"] / o["rps"] for m, o in zip(mine, one, strict=True))
                added = statistics.median((m["mean_ms"] - o["mean_ms"]) * 1000 for m, o in zip(mine, one, strict=True))
                med = {k: statistics.median(r[k] for r in mine) for k in ("rps", "mean_ms", "p50_ms", "p99_ms")}
                print(
                    f"{kind:8} {level:>4} {count:>6} {med['rps']:>8.0f} {med['mean_ms']:>8.3f} "
                    f"{med['p50_ms']:>8.3f} {med['p99_ms']:>8.3f} {ratio:>8.3f} {added:>8.1f}"
                )
    print("(rps x 1: median over rounds of rps / the 1-model server's in the same round; +us/req: the same for the")
    print(" difference of mean latencies, in microseconds)")


async def steady_load(url: str, rate: float, stop: asyncio.Event, statuses: list[int]) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        tasks: list[asyncio.Task[httpx.Response]] = []
        started = time.perf_counter()
        sent = 0
        while not stop.is_set():
            due = started + sent / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(client.post(url, json={"x": 2.0})))
            sent += 1
        for response in await asyncio.gather(*tasks, return_exceptions=True):
            statuses.append(response.status_code if isinstance(response, httpx.Response) else -1)


async def reload_once(server: Server, rate: float) -> tuple[float, float, list[int]]:
    stop, statuses = asyncio.Event(), []
    load = asyncio.create_task(steady_load(server.url + "/models/m0/predict", rate, stop, statuses))
    await asyncio.sleep(1.0)
    async with httpx.AsyncClient(timeout=120) as client:
        started = time.perf_counter()
        answer = await client.post(server.url + "/admin/models/m0/reload", headers={"Authorization": f"Bearer {ADMIN}"})
        wall = time.perf_counter() - started
    answer.raise_for_status()
    await asyncio.sleep(1.0)
    stop.set()
    await load
    return wall, answer.json()["seconds"], statuses


def reloads(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        server = Server(deployment("predict", 1, workers=2), Path(folder))
        try:
            for i in range(args.runs):
                wall, seconds, statuses = asyncio.run(reload_once(server, args.rate))
                failed = sum(1 for s in statuses if s != 200)
                print(
                    f"reload {i + 1}: {seconds:.3f} s (call {wall:.3f} s), 2 workers rolled, "
                    f"{len(statuses)} requests at {args.rate:g}/s, {failed} failed",
                    flush=True,
                )
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10, help="models in the many-model server")
    parser.add_argument("--kinds", default="predict,openai", help="routes to load: predict, openai or both")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated levels")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds (and reloads)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s of the load during reloads")
    parser.add_argument("--skip-routing", action="store_true", help="only measure reloads")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    if not args.skip_routing:
        routing(args)
    reloads(args)


if __name__ == "__main__":
    main()
