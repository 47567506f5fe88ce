"""V2 inference with JSON tensors against binary tensor data, side by side.

    python benchmarks/v2_binary.py                 # 1 KB, 100 KB, 10 MB FP32 tensors
    python benchmarks/v2_binary.py --seconds 5 --rounds 3

One `servectl serve` of an ONNX Identity model (`x` FP32 [-1, N] -> `y`) with `api.kind: v2`;
tritonclient (HTTP) sends one row of N floats and asks for the output back, as JSON
(`binary_data=False` both ways) or binary (`binary_data=True` both ways), one request at a
time for `--seconds`; rounds alternate the two; the table shows medians of rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from hardening import start  # noqa: E402

SIZES = {"1 KB": 256, "100 KB": 25_600, "10 MB": 2_621_440}  # FP32 elements


def identity(path: Path) -> Path:
    import onnx
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "n"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "n"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def measure(client: object, n: int, binary: bool, seconds: float) -> tuple[float, float]:
    import tritonclient.http as triton

    row = np.random.default_rng(0).normal(size=(1, n)).astype(np.float32)
    given = triton.InferInput("x", [1, n], "FP32")
    given.set_data_from_numpy(row, binary_data=binary)
    wanted = [triton.InferRequestedOutput("y", binary_data=binary)]
    times = []
    until = time.perf_counter() + seconds
    while time.perf_counter() < until or len(times) < 3:
        t0 = time.perf_counter()
        result = client.infer("identity", [given], outputs=wanted)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
    assert np.array_equal(result.as_numpy("y"), row)
    return len(times) / sum(times), statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per size, mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds alternating JSON and binary (medians shown)")
    args = parser.parse_args()
    import tritonclient.http as triton

    model = identity(Path(tempfile.mkdtemp()) / "identity.onnx")
    spec = {
        "name": "identity",
        "model": {"backend": "onnx", "path": str(model)},
        "api": {"kind": "v2"},
        "devices": {"accelerator": "cpu"},
        "limits": {"max_body_mb": 64},
        "server": {"access_log": False},
    }
    proc, url = start(spec)
    try:
        client = triton.InferenceServerClient(url=url.removeprefix("http://"), network_timeout=120)
        runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for label, n in SIZES.items():
                for mode in ("json", "binary"):
                    runs.setdefault((label, mode), []).append(measure(client, n, mode == "binary", args.seconds))
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"\nmedians of {args.rounds} rounds, {args.seconds:g} s each, one request at a time\n")
    print("| tensor | mode | rps | p50 ms | binary / JSON rps |")
    print("|---|---|---:|---:|---:|")
    for label in SIZES:
        med = {
            m: (statistics.median(r for r, _ in runs[(label, m)]), statistics.median(p for _, p in runs[(label, m)]))
            for m in ("json", "binary")
        }
        for mode in ("json", "binary"):
            ratio = f"{med['binary'][0] / med['json'][0]:.2f}x" if mode == "binary" else ""
            print(f"| {label} | {mode} | {med[mode][0]:.1f} | {med[mode][1]:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
