"""What the production features cost and give: the x**2 deployment of `access_log.py`
(auth, request ids, metrics; access log off so the log does not mask the difference) as is,
with a rate limit that never refuses (every request still takes from its key's bucket and
gets the x-ratelimit headers), and with the response cache (every request after the first
a hit: no worker). `wrk -t1 -c64`, the same body each time; settings alternate within each
round; medians of the rounds and of each round's ratio to the plain run.

    python benchmarks/production.py --runs 3 --duration 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from access_log import bench_spec, measure  # noqa: E402


def settings() -> dict[str, dict[str, object]]:
    plain = bench_spec("text", False)
    return {
        "plain": plain,
        "rate-limited": {**plain, "limits": {"max_queue": 4096, "rate": {"requests_per_minute": 1e9}}},
        "cached": {**plain, "cache": {"backend": "memory"}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    results: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.runs):
        for label, spec in settings().items():
            result, _ = measure(HERE.parent, spec, args.concurrency, args.duration)
            results.setdefault(label, []).append(result)
            print(f"{label:13} {result['rps']:9.0f} rps {result['cpu_us']:6.1f} us/req", flush=True)
    plain = results["plain"]
    print(f"\n{'setting':13} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'x plain':>8} {'api us/req':>10} {'errors':>7}")
    for label, runs in results.items():
        ratio = statistics.median(r["rps"] / p["rps"] for r, p in zip(runs, plain, strict=True))
        print(
            f"{label:13} {statistics.median(r['rps'] for r in runs):>9.0f}"
            f" {statistics.median(r['p50_ms'] for r in runs):>8.2f}"
            f" {statistics.median(r['p99_ms'] for r in runs):>8.2f}"
            f" {ratio:>8.2f} {statistics.median(r['cpu_us'] for r in runs):>10.1f}"
            f" {sum(int(r['errors']) for r in runs):>7}"
        )
    print(f"(wrk -t1 -c{args.concurrency} -d{args.duration:g}s, {args.runs} alternating rounds; x plain: median of")
    print(" each round's ratio to the plain run; api us/req: CPU time of the API process per request)")


if __name__ == "__main__":
    main()
