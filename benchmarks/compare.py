"""Side-by-side benchmark: servectl (default and tuned) vs LitServe vs inline FastAPI (with
and without its access log) vs bare ASGI on uvicorn and on granian, all on x**2.

Each app runs in its own process group on 127.0.0.1; `wrk` (Debian package) drives them
with the same Lua script. Runs alternate between apps, the table shows medians and each
app's ratio to the others; `--plot` draws rps and p99 against concurrency.

    python benchmarks/compare.py --duration 5 --runs 3 --concurrency 1,8,32,64 --json out.json --plot out.png
    python benchmarks/compare.py --baseline /tmp/old-main ...   # before/after: another checkout's servectl too
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
    pythonpath: str | None = None  # another checkout's code (`--baseline`)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> None:
        self.port = free_port()
        cmd = [part.replace("{port}", str(self.port)) for part in self.command]
        env = {**os.environ, "PYTHONPATH": self.pythonpath} if self.pythonpath else None
        self.process = subprocess.Popen(
            cmd, cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                r = httpx.post(self.url, json={"x": 2.0}, headers=headers)
                ready = httpx.get(self.url.replace("/predict", "/ready")).status_code  # 404: no probe
                if r.status_code == 200 and ready != 503:  # servectl: every API process answers
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


def apps(selected: list[str], baseline: Path | None = None) -> list[App]:
    py = sys.executable
    uvicorn = [py, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    serve = [py, "-m", "servectl", "serve"]
    granian = [py, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", "{port}", "--no-ws"]
    every = [
        App("servectl", [*serve, "servectl.yaml", "server.port={port}"], API_KEY),  # tuned: access log off
        App("servectl-default", [*serve, "servectl_default.yaml", "server.port={port}"], API_KEY),
        # server.api_processes: HTTP processes on one port (SO_REUSEPORT), each reaching the one worker
        App("servectl-api2", [*serve, "servectl.yaml", "server.port={port}", "server.api_processes=2"], API_KEY),
        App("servectl-api4", [*serve, "servectl.yaml", "server.port={port}", "server.api_processes=4"], API_KEY),
        App(
            "servectl-default-api2",
            [*serve, "servectl_default.yaml", "server.port={port}", "server.api_processes=2"],
            API_KEY,
        ),
        App("servectl-granian", [*granian, "--factory", "servectl_granian:app"], API_KEY),  # a measurement only
        App("litserve", [py, "litserve_app.py", "{port}"]),
        App("fastapi-inline", [*uvicorn, "--no-access-log", "fastapi_inline:app"]),
        App("fastapi-default", [*uvicorn, "fastapi_inline:app"]),  # uvicorn's access log on, as it ships
        App("asgi-inline", [*uvicorn, "--no-access-log", "asgi_inline:app"]),
        App("asgi-granian", [*granian, "asgi_inline:app"]),
    ]
    if baseline is not None:  # the same servectl apps on another checkout, alternating with these
        every += [
            App(f"{a.name}@base", a.command, a.api_key, str(baseline)) for a in every if a.name.startswith("servectl")
        ]
    return [a for a in every if a.name in selected or (baseline and a.name.removesuffix("@base") in selected)]


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
    parser.add_argument("--plot", type=Path, help="draw rps and p99 against concurrency into this PNG")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (a git worktree): its servectl apps run too, as NAME@base"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    levels = [int(c) for c in args.concurrency.split(",")]
    chosen = apps(args.apps.split(","), args.baseline)
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
    known = [b for b in ("fastapi-default", "fastapi-inline", "litserve", "asgi-inline") if b in args.apps]
    bases = known or [args.apps.split(",")[0]]  # none of the usual baselines: ratios to the first app
    rps = {(row["app"], row["concurrency"]): row["rps"] for row in table}
    print("| " + " | ".join(["app", "c", "rps", "p50 ms", "p99 ms", "errors", *("x " + b for b in bases)]) + " |")
    print("|---|" + "---:|" * (5 + len(bases)))
    for row in sorted(table, key=lambda r: (r["concurrency"], r["app"])):
        c = row["concurrency"]
        ratios = [f"{row['rps'] / rps[(b, c)]:.2f}" if (b, c) in rps else "-" for b in bases]
        cells = [row["app"], c, f"{row['rps']:.0f}", f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", row["errors"]]
        print("| " + " | ".join(str(cell) for cell in [*cells, *ratios]) + " |")
    if args.plot:
        plot(table, args.plot)
    if args.json:
        args.json.write_text(
            json.dumps({"medians": table, "runs": {f"{k[0]}@{k[1]}": v for k, v in runs.items()}}, indent=2)
        )


def plot(table: list[dict[str, float]], out: Path) -> None:
    """rps and p99 latency against concurrency, one line per app."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in dict.fromkeys(str(row["app"]) for row in table):
        rows = sorted((r for r in table if r["app"] == name), key=lambda r: r["concurrency"])
        levels = [r["concurrency"] for r in rows]
        left.plot(levels, [r["rps"] for r in rows], marker="o", label=name)
        right.plot(levels, [r["p99_ms"] for r in rows], marker="o", label=name)
    left.set(xscale="log", xlabel="concurrent connections", ylabel="requests/s", title="throughput (x**2)")
    right.set(xscale="log", yscale="log", xlabel="concurrent connections", ylabel="p99 ms", title="p99 latency")
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
