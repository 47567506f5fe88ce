"""Big payloads: 1 MB and 10 MB (decoded) base64 JSON bodies to a worker and back
(`apps/blob.py`: decode, re-encode, return), served by servectl at its defaults under
`wrk -t1 -c8`, against the same work done in-process in one loop (parse the JSON body,
decode, encode, serialize the answer): what serving costs on top of the work.

    python benchmarks/payloads.py --duration 5 --runs 3
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from access_log import start, stop  # noqa: E402
from compare import API_KEY  # noqa: E402

LUA = HERE / "apps" / "post_file.lua"


def body_of(megabytes: int) -> bytes:
    return orjson.dumps({"data": base64.b64encode(os.urandom(megabytes * 2**20)).decode()})


def in_process(body: bytes, seconds: float) -> float:
    sys.path.insert(0, str(HERE / "apps"))
    from blob import predict

    done, start_at = 0, time.perf_counter()
    while time.perf_counter() - start_at < seconds:
        orjson.dumps(predict([orjson.loads(body)]))
        done += 1
    return done / (time.perf_counter() - start_at)


def served(url: str, body_file: Path, concurrency: int, duration: float) -> dict[str, float]:
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file)}
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(LUA), url]
    cmd += ["-H", f"Authorization: Bearer {API_KEY}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    match = re.search(r"^RESULT (.*)$", out, re.M)
    assert match is not None, out
    result: dict[str, float] = json.loads(match.group(1))
    result["rps"] = result["requests"] / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sizes", default="1,10", help="payload sizes in MB (decoded)")
    args = parser.parse_args()
    spec = {"name": "blob", "handler": str(HERE / "apps" / "blob.py"), "auth": {"api_keys": API_KEY}}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for mb in (int(s) for s in args.sizes.split(",")):
            body = body_of(mb)
            body_file = Path(folder) / f"{mb}.json"
            body_file.write_bytes(body)
            spec["limits"] = {"max_body_mb": 4 * mb + 1}
            local, remote = [], []
            for _ in range(args.runs):
                local.append(in_process(body, args.duration))
                with tempfile.TemporaryDirectory() as run_folder:
                    proc, app, _ = start(HERE.parent, spec, Path(run_folder))
                    try:
                        remote.append(served(app.url, body_file, args.concurrency, args.duration))
                    finally:
                        stop(proc)
                print(f"{mb} MB: in-process {local[-1]:.1f}/s, served {remote[-1]['rps']:.1f}/s", flush=True)
            ratio = statistics.median(r["rps"] / n for r, n in zip(remote, local, strict=True))
            rows.append((mb, len(body), statistics.median(local), remote, ratio))
    print("\n| payload | body | in-process /s | served rps | p50 ms | p99 ms | served / in-process |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mb, size, local_rps, remote, ratio in rows:
        print(
            f"| {mb} MB | {size / 2**20:.1f} MiB | {local_rps:.1f} | {statistics.median(r['rps'] for r in remote):.1f}"
            f" | {statistics.median(r['p50_ms'] for r in remote):.1f}"
            f" | {statistics.median(r['p99_ms'] for r in remote):.1f}"
            f" | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
