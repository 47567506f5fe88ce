"""Side-by-side benchmark: servectl vs LitServe vs inline FastAPI vs bare ASGI, all on x**2.

Each app runs in its own process group on 127.0.0.1; `wrk` (Debian package) drives them
with the same Lua script. Runs alternate between apps, and the table shows medians.

    python benchmarks/compare.py --duration 5 --runs 3 --concurrency 1,8,32,64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from servectl.bench.runner import free_port

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
LUA = APPS / "post.lua"
API_KEY = "benchkey"


@dataclass
class App:
    name: str
    command: list[str]
    api_key: str = ""
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> None:
        self.port = free_port()
        cmd = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(
            cmd, cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                r = httpx.post(self.url, json={"x": 2.0}, headers=headers)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its whole group: LitServe leaves children
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def apps(selected: list[str]) -> list[App]:
    py = sys.executable
    uvicorn = [py, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    every = [
        App("servectl", [py, "-m", "servectl", "serve", "servectl.yaml", "server.port={port}"], API_KEY),
        App("litserve", [py, "litserve_app.py", "{port}"]),
        App("fastapi-inline", [*uvicorn, "--no-access-log", "fastapi_inline:app"]),
        App("asgi-inline", [*uvicorn, "--no-access-log", "asgi_inline:app"]),
    ]
    return [a for a in every if a.name in selected]


def run_wrk(app: App, concurrency: int, duration: float) -> dict[str, float]:
    env = {**os.environ, "BENCH_API_KEY": app.api_key}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(LUA), app.url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    match = re.search(r"^RESULT (.*)$", out, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    result = json.loads(match.group(1))
    result["rps"] = result["requests"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs per app and level")
    parser.add_argument("--concurrency", default="1,8,32,64", help="comma-separated levels")
    parser.add_argument("--apps", default="servectl,litserve,fastapi-inline,asgi-inline")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    levels = [int(c) for c in args.concurrency.split(",")]
    chosen = apps(args.apps.split(","))
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    # one app at a time (an idle LitServe still spins its CPU), apps alternating per round
    for _ in range(args.runs):
        for app in chosen:
            app.start()
            try:
                for level in levels:
                    runs.setdefault((app.name, level), []).append(run_wrk(app, level, args.duration))
            finally:
                app.stop()
    table = []
    for (name, level), results in runs.items():
        table.append(
            {
                "app": name,
                "concurrency": level,
                "rps": statistics.median(r["rps"] for r in results),
                "p50_ms": statistics.median(r["p50_ms"] for r in results),
                "p99_ms": statistics.median(r["p99_ms"] for r in results),
                "errors": sum(int(r["errors"]) for r in results),
            }
        )
    base = {(row["concurrency"]): row for row in table if row["app"] == "fastapi-inline"}
    lit = {(row["concurrency"]): row for row in table if row["app"] == "litserve"}
    print(
        f"{'app':16} {'c':>3} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'x fastapi':>9} {'x litserve':>10}"
    )
    for row in sorted(table, key=lambda r: (r["concurrency"], r["app"])):
        c = row["concurrency"]
        vs_fa = f"{row['rps'] / base[c]['rps']:.2f}" if c in base else "-"
        vs_ls = f"{row['rps'] / lit[c]['rps']:.2f}" if c in lit else "-"
        print(
            f"{row['app']:16} {c:>3} {row['rps']:>9.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['errors']:>6} {vs_fa:>9} {vs_ls:>10}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"medians": table, "runs": {f"{k[0]}@{k[1]}": v for k, v in runs.items()}}, indent=2)
        )


if __name__ == "__main__":
    main()
