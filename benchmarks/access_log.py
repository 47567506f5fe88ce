"""What the access log costs: the same servectl deployment with `server.access_log` on and off.

The x**2 handler of `apps/servectl.yaml` (auth, request ids and metrics on), stderr written
to a file as a log collector would read it, `wrk -t1 -c64` with `apps/post.lua`. Settings
alternate within each round; the table shows medians and the on/off throughput ratio.

    python benchmarks/access_log.py --runs 3 --duration 5 --formats text,json
    python benchmarks/access_log.py --before /tmp/old-main   # also the old code, in the same rounds
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from servectl.bench.runner import free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import API_KEY, App, run_wrk  # noqa: E402


def start(root: Path, spec: dict[str, object], folder: Path) -> tuple[subprocess.Popen[bytes], App, Path]:
    """Serve `spec` with `python -m servectl` from `root` (so that checkout's code runs)."""
    port = free_port()
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servectl", "serve", str(spec_path), f"server.port={port}"],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = App("servectl", [], API_KEY, proc, port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(app.url.replace("/predict", "/ready")).status_code == 200:
                return proc, app, log_path
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"server did not start:\n{log_path.read_text(errors='replace')}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(root: Path, spec: dict[str, object], concurrency: int, duration: float) -> tuple[dict[str, float], bytes]:
    """Serve `spec` from `root`, load it with wrk, stop it: wrk's figures plus the API
    process's CPU time per request (`cpu_us`), and what the server logged."""
    with tempfile.TemporaryDirectory() as folder:
        proc, app, log_path = start(root, spec, Path(folder))
        try:
            cpu = cpu_seconds(proc.pid)
            result = run_wrk(app, concurrency, duration)
            result["cpu_us"] = (cpu_seconds(proc.pid) - cpu) / result["requests"] * 1e6
        finally:
            stop(proc)
        return result, log_path.read_bytes()


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def bench_spec(fmt: str, on: bool) -> dict[str, object]:
    return {
        "name": "bench",
        "handler": str(HERE / "apps" / "square.py"),
        "devices": {"accelerator": "cpu", "workers_per_device": 1},
        "batching": {"max_batch_size": 64, "max_wait_ms": 1},
        "limits": {"max_queue": 4096},
        "auth": {"api_keys": API_KEY},
        "server": {"access_log": on, "log_format": fmt},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--formats", default="text", help="log formats to measure: text, json or text,json")
    parser.add_argument("--root", type=Path, default=HERE.parent, help="checkout whose servectl is served")
    parser.add_argument("--before", type=Path, help="another checkout (the old code), measured in the same rounds")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    roots = [("", args.root)] + ([("before ", args.before)] if args.before else [])
    formats = [("off", "text", False)] + [(f"on/{fmt}", fmt, True) for fmt in args.formats.split(",")]
    settings = [(prefix + label, root, fmt, on) for prefix, root in roots for label, fmt, on in formats]
    off_of = {prefix + label: prefix + "off" for prefix, _ in roots for label, _, _ in formats}
    results: dict[str, list[dict[str, float]]] = {}
    lines: dict[str, int] = {}
    for _ in range(args.runs):
        for label, root, fmt, on in settings:
            result, logged = measure(root, bench_spec(fmt, on), args.concurrency, args.duration)
            results.setdefault(label, []).append(result)
            lines[label] = lines.get(label, 0) + logged.count(b"servectl.access")
            print(f"{label:15} {result['rps']:9.0f} rps {result['cpu_us']:6.1f} us/req", flush=True)
    print(f"\n{'setting':15} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'x off':>6} {'api us/req':>10} {'lines':>8}")
    for label, runs in results.items():
        off = results[off_of[label]]
        ratio = statistics.median(r["rps"] / o["rps"] for r, o in zip(runs, off, strict=True))  # same round
        rps = statistics.median(r["rps"] for r in runs)
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        cpu = statistics.median(r["cpu_us"] for r in runs)
        print(f"{label:15} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f} {ratio:>6.2f} {cpu:>10.1f} {lines[label]:>8}")
    print(f"(served from {args.root}, before: {args.before}; x off: median of each round's ratio to the same")
    print(" checkout's off run; api us/req: CPU time of the API process per request)")


if __name__ == "__main__":
    main()
