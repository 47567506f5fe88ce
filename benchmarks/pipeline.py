"""Pipelined workers (`batching.pipeline`): a batch waits in a busy worker's inbox, so the
worker never idles for the round trip through the API process. A model that takes 1 ms and
one that takes 10 ms per batch (`apps/sleepy.py`), one worker, `wrk -t1 -c64`, pipeline off
and on alternating; worker utilisation is the worker's busy time (servectl_predict_seconds)
over the run's length.

    python benchmarks/pipeline.py --runs 3 --duration 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from access_log import API_KEY, start, stop  # noqa: E402
from compare import run_wrk  # noqa: E402


def predict_seconds(url: str) -> float:
    text = httpx.get(url.replace("/predict", "/metrics"), headers={"Authorization": f"Bearer {API_KEY}"}).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("servectl_predict_seconds_sum")
    )


def spec(pipeline: bool) -> dict[str, object]:
    return {
        "name": "bench",
        "handler": str(HERE / "apps" / "sleepy.py"),
        "devices": {"accelerator": "cpu", "workers_per_device": 1},
        "batching": {"max_batch_size": 64, "max_wait_ms": 1, "pipeline": pipeline},
        "limits": {"max_queue": 4096},
        "auth": {"api_keys": API_KEY},
        "server": {"access_log": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--model-ms", default="1,10", help="comma-separated model times per batch")
    args = parser.parse_args()
    results: dict[tuple[str, bool], list[dict[str, float]]] = {}
    for _ in range(args.runs):
        for ms in args.model_ms.split(","):
            os.environ["SLEEPY_MS"] = ms
            for pipeline in (False, True):
                with tempfile.TemporaryDirectory() as folder:
                    proc, app, _ = start(HERE.parent, spec(pipeline), Path(folder))
                    try:
                        busy, t0 = predict_seconds(app.url), time.monotonic()
                        result = run_wrk(app, args.concurrency, args.duration)
                        result["util"] = (predict_seconds(app.url) - busy) / (time.monotonic() - t0)
                    finally:
                        stop(proc)
                results.setdefault((ms, pipeline), []).append(result)
                print(
                    f"{ms:>3} ms pipeline={pipeline!s:5} {result['rps']:8.0f} rps util {result['util']:.2f}", flush=True
                )
    print(f"\n{'model':>6} {'pipeline':>8} {'rps':>8} {'p50 ms':>7} {'p99 ms':>7} {'worker util':>11} {'x off':>6}")
    for (ms, pipeline), runs in results.items():
        off = results[(ms, False)]
        ratio = statistics.median(r["rps"] / o["rps"] for r, o in zip(runs, off, strict=True))
        print(
            f"{ms + ' ms':>6} {'on' if pipeline else 'off':>8} {statistics.median(r['rps'] for r in runs):>8.0f}"
            f" {statistics.median(r['p50_ms'] for r in runs):>7.2f}"
            f" {statistics.median(r['p99_ms'] for r in runs):>7.2f}"
            f" {statistics.median(r['util'] for r in runs):>11.2f} {ratio:>6.2f}"
        )


if __name__ == "__main__":
    main()
