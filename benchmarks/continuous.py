"""Continuous batching against static batching and one request at a time, side by side.

    python benchmarks/continuous.py                      # tiny GPT-2, 1/16/64 streams, 3 rounds
    python benchmarks/continuous.py --width 256 --layers 4 --seconds 15

Closed-loop streams send `/v1/completions` requests with `stream: true`, greedy, one after
another, `max_tokens` drawn from a seeded RNG in 8..96. Per setting: output tokens/s (sum
of `usage.completion_tokens` over the window), time to first token p50/p99 (request sent
-> first non-empty text chunk), requests done. Modes, each a real `servectl serve` on
127.0.0.1 with default settings but for `batching`:

- `continuous`: `batching.continuous: true` (the default), max_batch_size 16;
- `static`: the same engine with `continuous: false` (a batch runs until its longest row
  ends, nobody joins it): isolates the scheduling;
- `previous`: the static batcher as it was before continuous batching (commit
  `--previous-commit`, checked out to a temporary worktree and served from it);
- `one-at-a-time`: `model.generate` per request (`benchmarks/apps/generate_one.py`),
  max_batch_size 1.

Rounds alternate the modes; the table shows medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from hardening import free_port  # noqa: E402

PREVIOUS = "4459bd2"  # main before continuous batching


def build_model(folder: Path, width: int, layers: int) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from servectl.examples.build import _tokenizer, build_gpt2

    if width == 32 and layers == 2:
        return build_gpt2(folder)
    torch.manual_seed(0)
    tok = _tokenizer(folder, "gpt2")
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=width,
        n_layer=layers,
        n_head=max(width // 64, 2),
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def spec_for(mode: str, model: Path) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "lm",
        "model": {"backend": "transformers", "task": "text-generation", "path": str(model)},
        "api": {"kind": "openai"},
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 16},
        "server": {"access_log": False},
    }
    if mode == "static":
        spec["batching"]["continuous"] = False
    if mode == "one-at-a-time":
        spec["model"] = {"backend": "python", "path": str(model)}
        spec["handler"] = str(ROOT / "benchmarks" / "apps" / "generate_one.py")
        spec["batching"] = {"max_batch_size": 1}
    return spec


def start(spec: dict[str, Any], code: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`servectl serve` from the package in `code` (this checkout, or the previous one)."""
    port = free_port()
    path = Path(tempfile.mkdtemp()) / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "servectl", "serve", str(path), f"server.port={port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=code, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{spec['name']} did not become ready")


async def one_stream(client: httpx.AsyncClient, rng: random.Random, until: float, out: dict[str, list[float]]) -> None:
    while time.perf_counter() < until:
        body = {
            "model": "lm",
            "prompt": f"story {rng.randint(0, 999)} begins",
            "max_tokens": rng.randint(8, 96),
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        t0, first, tokens = time.perf_counter(), None, 0
        async with client.stream("POST", "/v1/completions", json=body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                if first is None and '"text":""' not in line:
                    first = time.perf_counter() - t0
                if '"usage"' in line:
                    tokens = json.loads(line[6:])["usage"]["completion_tokens"]
        if time.perf_counter() <= until:  # only requests that ended inside the window count
            out["tokens"].append(tokens)
            out["ttft"].append(first if first is not None else time.perf_counter() - t0)


async def load(url: str, streams: int, seconds: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await client.post("/v1/completions", json={"model": "lm", "prompt": "warm up", "max_tokens": 4})
        out: dict[str, list[float]] = {"tokens": [], "ttft": []}
        t0 = time.perf_counter()
        until = t0 + seconds
        await asyncio.gather(*(one_stream(client, random.Random(i), until, out) for i in range(streams)))
        elapsed = time.perf_counter() - t0
    ttft = sorted(out["ttft"]) or [float("nan")]
    q = statistics.quantiles(ttft, n=100) if len(ttft) > 1 else [ttft[0]] * 99
    return {
        "tokens_per_s": sum(out["tokens"]) / elapsed,
        "ttft_p50_ms": statistics.median(ttft) * 1000,
        "ttft_p99_ms": q[98] * 1000,
        "requests": len(out["tokens"]),
    }


def previous_checkout(commit: str) -> Path:
    folder = Path(tempfile.mkdtemp()) / "previous"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), commit], check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64], help="concurrent streams to run")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per setting")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all modes (medians are reported)")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["continuous", "static", "previous", "one-at-a-time"],
        help="which servers to compare",
    )
    parser.add_argument("--width", type=int, default=32, help="GPT-2 width (n_embd); 32 is the tests' tiny GPT-2")
    parser.add_argument("--layers", type=int, default=2, help="GPT-2 layers")
    parser.add_argument("--previous-commit", default=PREVIOUS, help="the commit whose static batcher is `previous`")
    parser.add_argument("--json", type=Path, help="also write the medians and every round here")
    args = parser.parse_args()

    model = build_model(Path(tempfile.mkdtemp()) / "gpt2", args.width, args.layers)
    previous = previous_checkout(args.previous_commit) if "previous" in args.modes else None
    runs: dict[str, dict[int, list[dict[str, float]]]] = {m: {n: [] for n in args.streams} for m in args.modes}
    try:
        for r in range(args.rounds):
            for mode in args.modes:
                code = previous if mode == "previous" and previous else ROOT
                proc, url = start(spec_for(mode, model), code)
                try:
                    for n in args.streams:
                        result = asyncio.run(load(url, n, args.seconds))
                        runs[mode][n].append(result)
                        print(f"round {r + 1} {mode:>13} streams {n:>2}: {result}", flush=True)
                finally:
                    proc.terminate()
                    proc.wait(30)
    finally:
        if previous is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(previous)], check=False)
    medians = {
        m: {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in by_n.items()}
        for m, by_n in runs.items()
    }
    print(
        f"\nGPT-2 width {args.width}, {args.layers} layers; medians of {args.rounds} rounds, {args.seconds:g} s each\n"
    )
    print("| streams | mode | tokens/s | TTFT p50 ms | TTFT p99 ms | requests |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in args.streams:
        for m in args.modes:
            x = medians[m][n]
            row = f"{x['tokens_per_s']:.0f} | {x['ttft_p50_ms']:.0f} | {x['ttft_p99_ms']:.0f} | {x['requests']:.0f}"
            print(f"| {n} | {m} | {row} |")
    for base in ("static", "previous"):
        if "continuous" in medians and base in medians:
            for n in args.streams:
                c, s = medians["continuous"][n], medians[base][n]
                print(
                    f"streams {n}: continuous / {base} tokens/s = {c['tokens_per_s'] / s['tokens_per_s']:.2f}x, "
                    f"{base} / continuous TTFT p99 = {s['ttft_p99_ms'] / c['ttft_p99_ms']:.2f}x"
                )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "medians": medians}, indent=1))


if __name__ == "__main__":
    main()
