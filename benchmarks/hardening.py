"""Failure-mode measurements for the closing note (not tests: they take minutes).

python benchmarks/hardening.py overload   # ~4x capacity for 30 s: share of 503, p99 served, hung
python benchmarks/hardening.py kill       # kill -9 a worker under load: unanswered must be 0
python benchmarks/hardening.py sigterm    # SIGTERM under load: in-flight requests completed
python benchmarks/hardening.py memory     # API process RSS before/after 100k requests (needs wrk)
python benchmarks/hardening.py idle       # API + worker CPU while idle for 10 s
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

from servectl.bench.runner import free_port

ROOT = Path(__file__).resolve().parent.parent
TOOLBOX = ROOT / "tests" / "handlers" / "toolbox.py"


def start(spec: dict) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    path = Path(tempfile.mkdtemp()) / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "servectl", "serve", str(path), f"server.port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


def toolbox(**extra: dict) -> dict:
    spec = {"handler": str(TOOLBOX), "devices": {"accelerator": "cpu"}, "server": {"access_log": False}}
    spec.update(extra)
    return spec


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


async def open_loop(
    url: str, rate: float, seconds: float, body: dict, client_timeout: float
) -> list[tuple[int, float]]:
    """Send at a fixed rate regardless of answers; (status or -1 for no answer, latency).

    One short connection per request on raw asyncio streams: httpx's pool slows down
    quadratically with thousands of requests in flight, and would measure itself.
    """
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    results: list[tuple[int, float]] = []

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(client_timeout):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(request)
                status = int((await reader.readline()).split()[1])
                await reader.read()
                writer.close()
            results.append((status, time.perf_counter() - t0))
        except (TimeoutError, OSError, ValueError, IndexError):
            results.append((-1, time.perf_counter() - t0))

    tasks = []
    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        while n < int((now - start) * rate):
            tasks.append(asyncio.create_task(one()))
            n += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    return results


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else float("nan")


def overload() -> None:
    # capacity: one worker, 10 ms per single-item batch -> ~100 rps; offered 400 rps for 30 s
    proc, url = start(toolbox(batching={"max_batch_size": 1}, limits={"max_queue": 32, "timeout_s": 5}))
    try:
        results = asyncio.run(open_loop(url + "/predict", 400, 30, {"x": 1, "sleep": 0.01}, 30))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    counts = Counter(s for s, _ in results)
    served = [t for s, t in results if s == 200]
    print(f"overload: sent {len(results)}, statuses {dict(counts)}")
    print(f"  503 share {counts[503] / len(results):.1%}, served p99 {p99(served) * 1000:.1f} ms, hung {counts[-1]}")


async def steady(url: str, concurrency: int, seconds: float, during: float, action) -> Counter[int]:  # type: ignore[no-untyped-def]
    statuses: Counter[int] = Counter()
    stop = time.monotonic() + seconds

    async def user(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            try:
                r = await client.post(url, json={"x": 1, "sleep": 0.005})
                statuses[r.status_code] += 1
            except httpx.TimeoutException:
                statuses[-1] += 1  # sent, never answered
            except httpx.TransportError:
                statuses[-2] += 1  # refused: the server had stopped accepting
                await asyncio.sleep(0.05)

    async def trigger() -> None:
        await asyncio.sleep(during)
        action()

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(trigger(), *(user(client) for _ in range(concurrency)))
    return statuses


def kill() -> None:
    proc, url = start(toolbox(devices={"accelerator": "cpu", "workers_per_device": 2}))
    victim = children(proc.pid)
    try:
        workers = [p for p in victim if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()]
        statuses = asyncio.run(steady(url + "/predict", 32, 10, 3, lambda: os.kill(workers[0], signal.SIGKILL)))
        restarts = httpx.get(url + "/info").json()["workers"]["restarts"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    print(f"kill -9 under load: statuses {dict(statuses)} (unanswered: {statuses[-1]}), restarts {restarts}")


def sigterm() -> None:
    proc, url = start(toolbox())
    statuses = asyncio.run(steady(url + "/predict", 32, 6, 3, lambda: proc.send_signal(signal.SIGTERM)))
    code = proc.wait(30)
    print(f"SIGTERM under load: statuses {dict(statuses)} (-2: refused after close), exit code {code}")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory() -> None:
    spec = {"handler": "servectl.examples.square", "devices": {"accelerator": "cpu"}, "server": {"access_log": False}}
    proc, url = start(spec)
    lua = ROOT / "benchmarks" / "apps" / "post.lua"
    try:
        subprocess.run(["wrk", "-t1", "-c64", "-d2s", "-s", str(lua), url + "/predict"], capture_output=True)
        before = rss_kb(proc.pid)
        done = 0
        while done < 100_000:
            out = subprocess.run(
                ["wrk", "-t1", "-c64", "-d5s", "-s", str(lua), url + "/predict"], capture_output=True, text=True
            ).stdout
            done += int(out.split("RESULT ")[1].split('"requests": ')[1].split(",")[0])
        after = rss_kb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    print(f"memory: API process RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB after {done} requests")


def idle() -> None:
    proc, _ = start(toolbox())
    pids = [proc.pid, *children(proc.pid)]

    def ticks() -> int:
        return sum(sum(int(x) for x in Path(f"/proc/{p}/stat").read_text().split()[13:15]) for p in pids)

    t0, c0 = time.monotonic(), ticks()
    time.sleep(10)
    used = (ticks() - c0) / os.sysconf("SC_CLK_TCK")
    elapsed = time.monotonic() - t0
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    print(f"idle: API + workers used {used:.2f} s CPU in {elapsed:.1f} s = {100 * used / elapsed:.2f}% of one core")


if __name__ == "__main__":
    {"overload": overload, "kill": kill, "sigterm": sigterm, "memory": memory, "idle": idle}[sys.argv[1]]()
