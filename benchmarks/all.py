"""Every performance measurement in one command, written into benchmarks/README.md as a dated
section: engines and defaults side by side (table, PNG plot, the targets checked), API
processes, pipelined workers, big payloads, MiniLM embeddings.

    python benchmarks/all.py                     # 3 alternating runs of 4 s (about 30 minutes on 2 cores)
    python benchmarks/all.py --runs 2 --duration 3 --only compare,payloads --no-write

Needs `wrk` (Debian package), and for the comparison `pip install litserve granian`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPS = (
    "servectl,servectl-default,servectl-api2,servectl-default-api2,"
    "litserve,fastapi-inline,fastapi-default,asgi-inline,asgi-granian"
)


def steps(args: argparse.Namespace, day: str) -> dict[str, tuple[str, list[str]]]:
    timing = ["--duration", str(args.duration), "--runs", str(args.runs)]
    return {
        "compare": (
            "Engines and defaults: servectl (tuned, default, two API processes) against LitServe, FastAPI, bare ASGI",
            ["compare.py", *timing, "--concurrency", "1,8,64", "--apps", APPS, *plotted(day)],
        ),
        "api": (
            "API processes: 1, 2 and 4 in front of one worker",
            ["compare.py", *timing, "--concurrency", "64,256", "--apps", "servectl,servectl-api2,servectl-api4"],
        ),
        "pipeline": (
            "Pipelined workers (batching.pipeline), one worker, c=256",
            ["pipeline.py", *timing, "--concurrency", "256"],
        ),
        "payloads": ("Big payloads: base64 JSON and raw bytes, against in-process", ["payloads.py", *timing]),
        "minilm": ("MiniLM embeddings on CPU, served against the raw model", ["minilm.py", "--seconds", "10"]),
    }


def plotted(day: str) -> list[str]:
    return ["--json", f"results-{day}.json", "--plot", f"compare-{day}.png"]


def run(argv: list[str]) -> str:
    """Run one benchmark script from this folder, showing its output; return it."""
    print(f"\n$ python benchmarks/{' '.join(argv)}", flush=True)
    proc = subprocess.run([sys.executable, *argv], cwd=HERE, capture_output=True, text=True)
    print(proc.stdout[-4000:], proc.stderr[-2000:] if proc.returncode else "", flush=True)
    if proc.returncode:
        raise SystemExit(f"benchmarks/{argv[0]} failed with exit code {proc.returncode}")
    return proc.stdout


def summary(out: str) -> str:
    """The script's closing table (markdown lines), else its last lines as text."""
    lines = out.rstrip().splitlines()
    table = [line for line in lines if line.startswith("|")]
    if table:
        return "\n".join(table)
    tail = [line for line in lines[-8:] if line.strip()]
    return "```text\n" + "\n".join(tail) + "\n```"


def targets(results: Path) -> str:
    """Issue 18's targets, checked against the comparison's medians."""
    medians = {(m["app"], m["concurrency"]): m for m in json.loads(results.read_text())["medians"]}

    def get(app: str, c: int, key: str = "rps") -> float:
        return float(medians[(app, c)][key])

    rows: list[tuple[str, str, bool]] = []
    checks: list[tuple[str, Callable[[], tuple[str, bool]]]] = [
        (
            "default config >= 3x inline FastAPI with its access log (c=64)",
            lambda: _ratio(get("servectl-default", 64), get("fastapi-default", 64), 3),
        ),
        ("default config >= 15x LitServe (c=64)", lambda: _ratio(get("servectl-default", 64), get("litserve", 64), 15)),
        (
            "default config p99 <= FastAPI's (c=64)",
            lambda: (
                f"{get('servectl-default', 64, 'p99_ms'):.2f} vs {get('fastapi-default', 64, 'p99_ms'):.2f} ms",
                get("servectl-default", 64, "p99_ms") <= get("fastapi-default", 64, "p99_ms"),
            ),
        ),
        (
            "access log off >= 80% of the bare-ASGI ceiling (c=64)",
            lambda: _ratio(get("servectl", 64), get("asgi-inline", 64), 0.8, percent=True),
        ),
        (
            "the same, with `server.api_processes: 2` (c=64)",
            lambda: _ratio(get("servectl-api2", 64), get("asgi-inline", 64), 0.8, percent=True),
        ),
        (
            "c=1 p50 within 0.3 ms of inline FastAPI",
            lambda: (
                f"{get('servectl-default', 1, 'p50_ms'):.2f} vs {get('fastapi-inline', 1, 'p50_ms'):.2f} ms",
                get("servectl-default", 1, "p50_ms") - get("fastapi-inline", 1, "p50_ms") <= 0.3,
            ),
        ),
    ]
    for what, check in checks:
        try:
            measured, met = check()
        except KeyError as missing:
            measured, met = f"not measured ({missing})", False
        rows.append((what, measured, met))
    body = "\n".join(f"| {what} | {measured} | {'yes' if met else 'no'} |" for what, measured, met in rows)
    return "| target | measured | met |\n|---|---|---|\n" + body


def _ratio(value: float, base: float, at_least: float, percent: bool = False) -> tuple[str, bool]:
    ratio = value / base
    return (f"{ratio:.0%}" if percent else f"{ratio:.2f}x"), ratio >= at_least


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measured run")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs (medians are shown)")
    parser.add_argument("--only", default="compare,api,pipeline,payloads,minilm", help="comma-separated steps")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of adding it to README.md")
    parser.add_argument("--label", default="", help="added to the JSON and PNG names (a second run in a day)")
    args = parser.parse_args()
    date = datetime.date.today().isoformat()
    day = date + (f"-{args.label}" if args.label else "")  # names its JSON and PNG
    chosen = steps(args, day)
    wanted = args.only.split(",")
    unknown = set(wanted) - set(chosen)
    if unknown:
        raise SystemExit(f"unknown steps {sorted(unknown)}; known: {', '.join(chosen)}")
    what = "every measurement" if args.only == parser.get_default("only") else ", ".join(wanted)
    label = f" --label {args.label}" if args.label else ""
    command = f"python benchmarks/all.py --runs {args.runs} --duration {args.duration:g} --only {args.only}{label}"
    parts = [f"## {date}{f' ({args.label})' if args.label else ''}: {what} (`{command}`)"]
    for name in wanted:
        title, argv = chosen[name]
        out = run(argv)
        parts += [f"**{title}** (`python benchmarks/{' '.join(argv)}`):", summary(out)]
        if name == "compare":
            parts += [f"![rps and p99 against concurrency](compare-{day}.png)", targets(HERE / f"results-{day}.json")]
    section = "\n\n".join(parts) + "\n"
    if args.no_write:
        print("\n" + section)
        return
    with open(HERE / "README.md", "a") as readme:
        readme.write("\n" + section)
    print(f"\nadded to benchmarks/README.md:\n\n{section}")


if __name__ == "__main__":
    main()
