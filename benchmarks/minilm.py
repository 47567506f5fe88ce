"""MiniLM embeddings on CPU: the raw model in-process vs servectl serving it.

    python benchmarks/minilm.py --seconds 15 --runs 3

Raw: the same feature-extraction runner servectl uses, called in-process at batch sizes
1, 8 and 32 (tokenize + forward + pool), items/s. Served: `configs/embeddings.yaml`
(max_batch_size 32) under wrk at concurrency 64, one text per request, requests/s.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from servectl.bench.runner import free_port

ROOT = Path(__file__).resolve().parent.parent
TEXT = "servectl turns one YAML file into a production inference server with dynamic batching."


def raw(seconds: float) -> dict[int, float]:
    from servectl.runners.transformers import FeatureExtraction
    from servectl.spec import load_spec

    spec = load_spec(ROOT / "configs" / "embeddings.yaml", ["devices.accelerator=cpu"])
    runner = FeatureExtraction(spec)
    runner.setup("cpu", spec)
    out = {}
    for size in (1, 8, 32):
        batch = [(TEXT, {})] * size
        runner.predict(batch)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            runner.predict(batch)
            done += size
        out[size] = done / (time.perf_counter() - start)
    return out


def served(seconds: float) -> tuple[float, float, float]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "servectl",
            "serve",
            "configs/embeddings.yaml",
            f"server.port={port}",
            "devices.accelerator=cpu",
            "server.access_log=false",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        lua = Path(tempfile.mkdtemp()) / "embed.lua"
        script = (ROOT / "benchmarks" / "apps" / "post.lua").read_text()
        lua.write_text(script.replace("""wrk.body = '{"x": 4.0}'""", f"""wrk.body = '{{"inputs": "{TEXT}"}}'"""))
        subprocess.run(["wrk", "-t1", "-c64", "-d3s", "-s", str(lua), url + "/predict"], capture_output=True)
        out = subprocess.run(
            ["wrk", "-t1", "-c64", f"-d{int(seconds)}s", "-s", str(lua), url + "/predict"],
            capture_output=True,
            text=True,
        ).stdout
        m = re.search(
            r'"requests": (\d+), "seconds": ([\d.]+), "errors": (\d+), "p50_ms": ([\d.]+), "p99_ms": ([\d.]+)', out
        )
        assert m, out
        metrics = httpx.get(url + "/metrics").text
        count = float(re.search(r"^servectl_batch_size_count(?:{[^}]*})? (\S+)", metrics, re.M).group(1))  # type: ignore[union-attr]
        total = float(re.search(r"^servectl_batch_size_sum(?:{[^}]*})? (\S+)", metrics, re.M).group(1))  # type: ignore[union-attr]
        return int(m.group(1)) / float(m.group(2)), float(m.group(5)), total / count
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="served seconds a run (raw: a third a batch size)")
    parser.add_argument("--runs", type=int, default=3, help="alternating raw and served runs; medians are shown")
    args = parser.parse_args()
    raws: list[dict[int, float]] = []
    serves: list[tuple[float, float, float]] = []
    for _ in range(args.runs):  # alternating: a machine that slows down slows both
        raws.append(raw(args.seconds / 3))
        serves.append(served(args.seconds))
    for size in raws[0]:
        runs = ", ".join(f"{r[size]:.1f}" for r in raws)
        print(f"raw in-process, batch {size:>2}: {statistics.median(r[size] for r in raws):7.1f} items/s ({runs})")
    rps = statistics.median(s[0] for s in serves)
    p99 = statistics.median(s[1] for s in serves)
    mean_batch = statistics.median(s[2] for s in serves)
    runs = ", ".join(f"{s[0]:.1f}" for s in serves)
    print(f"served, c=64, max_batch_size 32: {rps:7.1f} requests/s ({runs}; p99 {p99:.0f} ms, batch {mean_batch:.1f})")
    ratios = ", ".join(f"{s[0] / r[32]:.1%}" for s, r in zip(serves, raws, strict=True))
    ratio = rps / statistics.median(r[32] for r in raws)
    print(f"efficiency vs raw batch 32: {ratio:.1%} of the medians (each run: {ratios})")
