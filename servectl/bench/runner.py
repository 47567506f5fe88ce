"""`servectl bench`: a concurrency sweep against a spec (served here) or a running URL.

Per level: client-side throughput and latency, and the server's own split (queue vs
predict time, mean batch size) read from `/metrics` before and after; process CPU and
memory when the server is local; GPU figures when nvidia-ml-py is installed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from servectl import __version__
from servectl.bench.load import Target, run_load, summarize


class BenchError(Exception):
    """The benchmark cannot run: unreachable server, bad payload, failing requests."""


@dataclass
class BenchOptions:
    concurrency: list[int]
    duration_s: float | None
    requests: int | None
    warmup_s: float
    payload: str | None
    route: str | None
    stream: bool
    api_key: str | None
    procs: int
    engine: str
    baseline: bool
    model: str | None = None  # of several: the one loaded (its route, batch size, metrics)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(spec_path: Path, overrides: list[str]) -> Iterator[tuple[str, int]]:
    """Start `servectl serve` for the benchmark and stop it after; yields (url, pid)."""
    port = free_port()
    log = open(os.devnull, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "servectl",
            "serve",
            str(spec_path),
            f"server.port={port}",
            "server.host=127.0.0.1",
            "server.access_log=false",
            *overrides,
        ],
        stdout=log,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise BenchError(f"the server exited with {proc.returncode}:\n{err[-3000:]}")
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise BenchError("the server did not become ready within 300 s")
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


_SAMPLE = re.compile(r"^(servectl_\w+?)(?:\{([^}]*)\})? (\S+)$", re.M)


def scrape(url: str, headers: dict[str, str], model: str | None = None) -> dict[str, float]:
    """servectl's own metrics, summed over labels (only `model`'s samples when given: other
    models of the server may be busy too); empty when the server has none."""
    try:
        r = httpx.get(url + "/metrics", headers=headers, timeout=5)
    except httpx.TransportError:
        return {}
    if r.status_code != 200:
        return {}
    out: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(r.text):
        if name.endswith("_bucket") or (model is not None and f'model="{model}"' not in labels):
            continue
        key = name
        if name == "servectl_requests_total" and labels:
            route = re.search(r'route="([^"]*)"', labels)
            status = re.search(r'status="(\d+)"', labels)
            key = f"{name}:{route.group(1) if route else ''}:{status.group(1) if status else ''}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


def server_split(before: dict[str, float], after: dict[str, float], route: str) -> dict[str, Any] | None:
    """The server's own view of a level: time queued vs predicting, batch size, statuses."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("servectl_batch_size_count")
    items = delta("servectl_queue_seconds_count")
    if not after or not items:
        return None
    return {
        "queue_ms_mean": round(1000 * delta("servectl_queue_seconds_sum") / items, 3),
        "predict_ms_mean": round(1000 * delta("servectl_predict_seconds_sum") / max(batches, 1), 3),
        "batch_size_mean": round(delta("servectl_batch_size_sum") / max(batches, 1), 2),
        "responses_by_status": {
            k.rsplit(":", 1)[1]: int(after[k] - before.get(k, 0.0))
            for k in sorted(after)
            if k.startswith(f"servectl_requests_total:{route}:") and after[k] - before.get(k, 0.0)
        },
    }


def _process_tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(frontier.pop())], capture_output=True, text=True)
        kids = [int(p) for p in out.stdout.split()]
        pids += kids
        frontier += kids
    return pids


def process_stats(pid: int | None) -> tuple[float, float] | None:
    """(CPU seconds, resident MiB) of a process and its children, from /proc."""
    if pid is None:
        return None
    cpu, rss = 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in _process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, IndexError, ValueError):
            continue
    return cpu, rss


def gpu_stats() -> list[dict[str, float]] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append({"gpu": i, "util_percent": float(util.gpu), "memory_mib": mem.used / 2**20})
        return out
    except Exception:
        return None


def resolve_payload(option: str | None, url: str, route: str, headers: dict[str, str]) -> bytes:
    """`--payload` as a file or JSON text, else the example the served handler declares."""
    if option:
        path = Path(option)
        text = path.read_text() if path.exists() else option
        try:
            return orjson.dumps(orjson.loads(text))
        except orjson.JSONDecodeError as exc:
            raise BenchError(f"--payload is neither a file nor valid JSON: {exc}") from None
    try:
        schema = httpx.get(url + "/openapi.json", headers=headers, timeout=10).json()
        example = schema["paths"][route]["post"]["requestBody"]["content"]["application/json"]["example"]
    except (httpx.HTTPError, KeyError, ValueError):
        raise BenchError(
            f"no --payload given and the server declares no example request for {route}: pass --payload FILE|JSON"
        ) from None
    return orjson.dumps(example)


def run_wrk(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    """The same level driven by wrk (`--engine wrk`)."""
    import shutil
    import tempfile

    if shutil.which("wrk") is None:
        raise BenchError("--engine wrk: wrk is not installed (apt-get install wrk)")
    body = target.body.decode().replace("\\", "\\\\").replace("'", "\\'")
    auth = f'wrk.headers["Authorization"] = "Bearer {target.api_key}"\n' if target.api_key else ""
    script = (
        f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n{auth}'
        "done = function(s, lat, req)\n"
        '  io.write(string.format("RESULT %d %f %d %f %f %f %f\\n", s.requests, s.duration / 1e6, s.errors.status,'
        " lat:percentile(50) / 1000, lat:percentile(90) / 1000, lat:percentile(99) / 1000, lat.max / 1000))\n"
        "end\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", f.name, target.url],
        capture_output=True,
        text=True,
    ).stdout
    os.unlink(f.name)
    m = re.search(r"^RESULT (\d+) ([\d.]+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)$", out, re.M)
    if m is None:
        raise BenchError(f"wrk printed no result:\n{out[-2000:]}")
    n, secs, errors = int(m.group(1)), float(m.group(2)), int(m.group(3))
    return {
        "requests": n,
        "ok": n - errors,
        "seconds": secs,
        "rps": round(n / secs, 2),
        "latency_ms": {k: round(float(m.group(i)), 3) for k, i in (("p50", 4), ("p90", 5), ("p99", 6), ("max", 7))},
        "errors": {"by_status": {"non-2xx": errors} if errors else {}, "503": None, "504": None, "connection": 0},
        "client_cpu_percent": None,
    }


def bench(
    url: str,
    options: BenchOptions,
    server_pid: int | None,
    spec_info: dict[str, Any],
    on_level: Callable[[int, float], None] | None = None,
    baseline: dict[int, float] | None = None,
) -> dict[str, Any]:
    """Run every concurrency level; the report (partial if interrupted, with `interrupted`)."""
    route = options.route or spec_info.get("route") or "/predict"
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    try:
        httpx.get(url + "/health", timeout=5)
    except httpx.TransportError as exc:
        raise BenchError(f"server not reachable at {url}: {exc}") from None
    payload = resolve_payload(options.payload, url, route, headers)
    target = Target(url.rstrip("/") + route, payload, options.api_key, options.stream)
    probe = httpx.post(target.url, content=payload, headers={**headers, "Content-Type": "application/json"}, timeout=60)
    if probe.status_code >= 400:
        raise BenchError(f"the server answers the payload with {probe.status_code}: {probe.text[:2000]}")
    report: dict[str, Any] = {
        "servectl_version": __version__,
        "target": target.url,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "engine": options.engine,
        "procs": options.procs,
        "payload_bytes": len(payload),
        "spec": spec_info,
        "baseline": {str(k): v for k, v in (baseline or {}).items()} or None,
        "levels": [],
    }
    try:
        for level in options.concurrency:
            if options.warmup_s:
                run_load(target, level, options.warmup_s, None, options.procs)
            before, stats0 = scrape(url, headers, options.model), process_stats(server_pid)
            if on_level:
                on_level(level, options.duration_s or 0.0)
            if options.engine == "wrk":
                figures = run_wrk(target, level, options.duration_s or 10.0)
            else:
                result = run_load(target, level, options.duration_s, options.requests, options.procs)
                figures = summarize(result)
                if result.first_error and not figures["ok"]:
                    raise BenchError(f"every request failed; the first answer was {result.first_error}")
                figures["first_error"] = result.first_error
            stats1 = process_stats(server_pid)
            figures["concurrency"] = level
            figures["server"] = server_split(before, scrape(url, headers, options.model), route)
            if stats0 and stats1 and figures["seconds"]:
                figures["server_process"] = {
                    "cpu_percent": round(100 * (stats1[0] - stats0[0]) / figures["seconds"], 1),
                    "rss_mib": round(stats1[1], 1),
                }
            figures["gpu"] = gpu_stats()
            if baseline:
                from servectl.bench.baseline import matching_batch

                size = matching_batch(level, spec_info.get("max_batch_size") or 1, baseline)
                figures["efficiency"] = {
                    "batch_size": size,
                    "raw_items_per_s": baseline[size],
                    "ratio": float(f"{figures['rps'] / baseline[size]:.4g}"),
                }
            cpu = figures.get("client_cpu_percent")
            figures["client_bound"] = bool(cpu and cpu > 90 * max(1, options.procs))
            report["levels"].append(figures)
    except KeyboardInterrupt:
        report["interrupted"] = True
    return report
