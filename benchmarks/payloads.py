"""Big payloads: 1 MB and 10 MB (decoded) base64 JSON bodies to a worker and back
(`apps/blob.py`: decode, re-encode, return), and the same sizes as raw bytes (a V2 binary
tensor through an ONNX Identity model, answered as binary), served by servectl at its
defaults under `wrk -t1 -c8`, against the same work done in-process in one loop (parse the
body, decode, run, encode, serialize the answer): what serving costs on top of the work.

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
from v2_binary import identity as v2_identity  # noqa: E402

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


def raw_body_of(megabytes: int) -> tuple[bytes, int]:
    """A V2 binary infer request of one FP32 row of `megabytes`: its JSON head, then the raw data."""
    n = megabytes * 2**18  # 4-byte floats
    head = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32", "parameters": {"binary_data_size": 4 * n}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    return head + os.urandom(4 * n), len(head)


def raw_in_process(body: bytes, json_length: int, model: Path, seconds: float) -> float:
    """The raw request's work in one loop: parse the head, view the data, run, answer."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    done, start_at = 0, time.perf_counter()
    while time.perf_counter() - start_at < seconds:
        head = orjson.loads(body[:json_length])
        shape = head["inputs"][0]["shape"]
        x = np.frombuffer(body, dtype=np.float32, offset=json_length).reshape(shape)
        (y,) = session.run(["y"], {"x": x})
        answer = orjson.dumps({"outputs": [{"name": "y", "shape": list(y.shape), "datatype": "FP32"}]})
        b"".join([answer, y.tobytes()])
        done += 1
    return done / (time.perf_counter() - start_at)


def served(
    url: str, body_file: Path, concurrency: int, duration: float, json_length: int | None = None
) -> dict[str, float]:
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file)}
    if json_length is not None:
        env["BENCH_JSON_LENGTH"] = str(json_length)
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
    parser.add_argument("--kinds", default="base64,raw", help="base64 (JSON), raw (V2 binary), or both")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        identity = v2_identity(Path(folder) / "identity.onnx")
        for kind in args.kinds.split(","):
            for mb in (int(s) for s in args.sizes.split(",")):
                rows.append(measure(kind, mb, identity, Path(folder), args))
    print("\n| payload | kind | body | in-process /s | served rps | p50 ms | p99 ms | served / in-process |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mb, kind, size, local_rps, remote, ratio in rows:
        print(
            f"| {mb} MB | {kind} | {size / 2**20:.1f} MiB | {local_rps:.1f}"
            f" | {statistics.median(r['rps'] for r in remote):.1f}"
            f" | {statistics.median(r['p50_ms'] for r in remote):.1f}"
            f" | {statistics.median(r['p99_ms'] for r in remote):.1f}"
            f" | {ratio:.2f} |"
        )


def measure(
    kind: str, mb: int, identity: Path, folder: Path, args: argparse.Namespace
) -> tuple[int, str, int, float, list[dict[str, float]], float]:
    """Alternating in-process and served runs of one payload."""
    json_length = None
    if kind == "raw":
        body, json_length = raw_body_of(mb)
        spec: dict[str, object] = {
            "name": "blob",
            "model": {"backend": "onnx", "path": str(identity)},
            "api": {"kind": "v2"},
            "devices": {"accelerator": "cpu"},
        }
    else:
        body = body_of(mb)
        spec = {"name": "blob", "handler": str(HERE / "apps" / "blob.py")}
    spec.update(auth={"api_keys": API_KEY}, limits={"max_body_mb": 4 * mb + 1})
    body_file = folder / f"{kind}-{mb}.body"
    body_file.write_bytes(body)
    local, remote = [], []
    for _ in range(args.runs):
        if json_length is None:
            local.append(in_process(body, args.duration))
        else:
            local.append(raw_in_process(body, json_length, identity, args.duration))
        with tempfile.TemporaryDirectory() as run_folder:
            proc, app, _ = start(HERE.parent, spec, Path(run_folder))
            url = app.url if json_length is None else app.url.replace("/predict", "/v2/models/blob/infer")
            try:
                remote.append(served(url, body_file, args.concurrency, args.duration, json_length))
            finally:
                stop(proc)
        print(f"{mb} MB {kind}: in-process {local[-1]:.1f}/s, served {remote[-1]['rps']:.1f}/s", flush=True)
    ratio = statistics.median(r["rps"] / n for r, n in zip(remote, local, strict=True))
    return mb, kind, len(body), statistics.median(local), remote, ratio


if __name__ == "__main__":
    main()
