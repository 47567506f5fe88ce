"""Logs and start-up checks, end to end: real `servectl serve` processes on 127.0.0.1.

The access log is buffered yet complete (flushed while serving and at SIGTERM); request
text cannot forge log lines or carry terminal escapes; `log_format: json` keeps stderr
JSON-only; API keys that resolve to nothing fail closed; a binary spec is a one-line error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from servectl.bench.runner import free_port

from support.paths import ROOT
from support.servers import write_spec
from support.specs import toolbox_spec

KEY = "k-logging"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUIET_HANDLER = """
import sys
import warnings

from tqdm import tqdm

example = {"x": 2.0}


def setup(device, spec):
    warnings.warn("weights saved by an older version", UserWarning)
    for _ in tqdm(range(3), desc="loading"):  # a progress bar, as model downloads draw
        pass


def predict(batch):
    if any(item.get("fail") for item in batch):
        raise ValueError("boom\\n2026-01-01 ERROR forged by the handler")
    return [{"y": item["x"] ** 2} for item in batch]
"""


class Served:
    """`python -m servectl serve` with stdout and stderr in separate files."""

    def __init__(self, spec_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out_path, self.err_path = spec_path.with_suffix(".out"), spec_path.with_suffix(".err")
        full_env = {k: v for k, v in os.environ.items() if k != "SERVECTL_API_KEYS"}
        full_env.update(env or {})
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "servectl", "serve", str(spec_path), f"server.port={self.port}"],
                stdout=out,
                stderr=err,
                env=full_env,
                cwd=ROOT,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.stderr()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def stderr(self) -> str:
        return self.err_path.read_bytes().decode(errors="replace")


@pytest.fixture
def served(tmp_path: Path):
    started: list[Served] = []

    def start(spec: dict, env: dict[str, str] | None = None, ready: bool = True) -> Served:
        server = Served(write_spec(tmp_path, spec, f"spec{len(started)}.yaml"), env)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def raw_request(port: int, target: bytes, rid: str) -> bytes:
    """One request with the exact bytes given (no client normalises the path); the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + rid.encode() + b"\r\n\r\n")
        return sock.recv(65536).split(b"\r\n", 1)[0]


def access_lines(log: str, rid: str) -> list[str]:
    return [line for line in log.splitlines() if "servectl.access" in line and line.endswith(f" rid={rid}")]


def test_access_log_is_flushed_while_serving_and_at_sigterm(served) -> None:
    server = served(toolbox_spec(auth={"api_keys": KEY}))
    for i in range(20):
        httpx.post(server.url + "/predict", json={"x": i}, headers={**AUTH, "X-Request-Id": f"early-{i}"})
    time.sleep(0.6)  # flushed within 100 ms, while the server keeps running
    log = server.stderr()
    assert all(len(access_lines(log, f"early-{i}")) == 1 for i in range(20)), log[-2000:]
    line = access_lines(log, "early-3")[0]
    assert " INFO    servectl.access: POST /predict 200 " in line and line.endswith("ms rid=early-3")
    with httpx.Client(headers=AUTH) as client:  # the last requests, then SIGTERM at once
        statuses = [
            client.post(server.url + "/predict", json={"x": i}, headers={"X-Request-Id": f"last-{i}"})
            for i in range(30)
        ]
        unauthorized = httpx.post(server.url + "/predict", json={"x": 1}, headers={"X-Request-Id": "no"})
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert [r.status_code for r in statuses] == [200] * 30 and unauthorized.status_code == 401
    log = server.stderr()
    assert all(len(access_lines(log, f"last-{i}")) == 1 for i in range(30)), log[-3000:]
    assert access_lines(log, "no")[0].split(": ", 1)[1].startswith("POST /predict 401 ")


FORGED = [  # (request target, what the log must show instead)
    (b"/x%0a2026-01-01 00:00:00,000 ERROR   servectl: forged".replace(b" ", b"%20"), "/x\\x0a2026-01-01"),
    (b"/y%0d%0a2026-01-01%20ERROR%20forged", "/y\\x0d\\x0a2026"),
    (b"/z%1b[31mred%1b[0m", "/z\\x1b[31mred\\x1b[0m"),
    (b"/c1%c2%9b31m", "/c1\\x9b31m"),  # U+009B: CSI on terminals that honour C1 codes
    (b"/sep%e2%80%a8after%7f", "/sep\\u2028after\\x7f"),
]


def test_request_text_cannot_forge_log_lines(served, tmp_path: Path) -> None:
    handler = tmp_path / "quiet_model.py"
    handler.write_text(QUIET_HANDLER)
    spec = toolbox_spec(handler=str(handler), auth={"api_keys": KEY})  # 401s are logged too
    server = served(spec, env={"TQDM_DISABLE": "1"})
    statuses = [raw_request(server.port, target, f"forge-{i}") for i, (target, _) in enumerate(FORGED)]
    raw = raw_request(server.port, b"/raw\x1b[31mred", "forge-raw")  # a raw ESC: refused or escaped
    failed = httpx.post(server.url + "/predict", json={"x": 1, "fail": True}, headers={**AUTH, "X-Request-Id": "f1"})
    assert all(s.startswith(b"HTTP/1.1 401") for s in statuses) and failed.status_code == 500, statuses
    assert server.stop() == 0
    log = server.err_path.read_bytes()
    assert b"\x1b" not in log and b"\xc2\x9b" not in log and b"\x7f" not in log and "\u2028" not in log.decode()
    text = log.decode()
    for i, (_, shown) in enumerate(FORGED):
        [line] = access_lines(text, f"forge-{i}")
        assert f"GET {shown}" in line and " 401 " in line
    if raw.startswith(b"HTTP/1.1 401"):
        [line] = access_lines(text, "forge-raw")
        assert "/raw\\x1b[31mred" in line
    lines = text.splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines), text  # the handler's forged line neither
    errors = [line for line in lines if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR ", line)]
    assert len(errors) == 1 and " servectl.worker: request f1: " in errors[0], text
    assert "    2026-01-01 ERROR forged by the handler" in lines, text  # kept, as an indented further line


def test_json_log_format_keeps_stderr_json_only(served, tmp_path: Path) -> None:
    handler = tmp_path / "quiet_model.py"
    handler.write_text(QUIET_HANDLER)
    spec = toolbox_spec(handler=str(handler), auth={"api_keys": KEY}, server={"log_format": "json"})
    server = served(spec)
    ok = httpx.post(server.url + "/predict", json={"x": 3}, headers=AUTH)
    failed = httpx.post(server.url + "/predict", json={"x": 1, "fail": True}, headers={**AUTH, "X-Request-Id": "f1"})
    refused = httpx.post(server.url + "/predict", json={"x": 1}, headers={"X-Request-Id": "r1"})
    forged = raw_request(server.port, b"/a%0a%1b[31mb", "j1")
    last = httpx.get(server.url + "/health", headers={"X-Request-Id": "last"})
    assert (ok.status_code, failed.status_code, refused.status_code, last.status_code) == (200, 500, 401, 200)
    assert forged.startswith(b"HTTP/1.1 401")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    err = server.err_path.read_bytes()
    assert b"\x1b" not in err and b"color_message" not in err
    entries = [json.loads(line) for line in err.decode().splitlines() if line.strip()]  # every line is JSON
    assert server.out_path.read_text() == ""  # stdout is no terminal: no table
    [serving] = [e for e in entries if e["message"].startswith("serving ")]
    assert serving["summary"]["auth"] == "1 API key(s)" and serving["summary"]["url"].endswith("/predict")
    access = {e["request_id"]: e for e in entries if e["logger"] == "servectl.access"}
    assert {k: access["r1"][k] for k in ("method", "path", "status")} == {
        "method": "POST",
        "path": "/predict",
        "status": 401,
    }
    assert access["j1"]["path"] == "/a\\x0a\\x1b[31mb" and access["last"]["status"] == 200
    assert isinstance(access["f1"]["ms"], float) and access["f1"]["status"] == 500
    assert any(e["level"] == "error" and e.get("request_id") == "f1" and "boom" in e["message"] for e in entries)
    assert any(e["logger"] == "py.warnings" and "older version" in e["message"] for e in entries)
    assert not any("loading" in e["message"] for e in entries)  # no progress bar, not even as a log line


@pytest.mark.parametrize("keys", ["", ","])
def test_empty_api_keys_fail_closed(tmp_path: Path, keys: str) -> None:
    text = "handler: {h}\ndevices: {{accelerator: cpu}}\nauth:\n  api_keys: ${{oc.env:SERVECTL_API_KEYS{d}}}\n"
    env = {**os.environ, "SERVECTL_API_KEYS": keys}
    runs = []  # every command at once: each must fail on its own
    for i, default in enumerate(("", ",null")):  # the variable is set, if empty: an error either way
        spec = tmp_path / f"spec{i}.yaml"
        spec.write_text(text.format(h=ROOT / "tests" / "handlers" / "toolbox.py", d=default))
        for command in (["validate", str(spec)], ["serve", str(spec), f"server.port={free_port()}"]):
            proc = subprocess.Popen(
                [sys.executable, "-m", "servectl", *command],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
            runs.append((spec, command, proc))
    for spec, command, proc in runs:
        try:
            out = proc.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0].decode()
            pytest.fail(f"{command[0]} with SERVECTL_API_KEYS={keys!r} did not fail:\n{out}")
        assert proc.returncode == 1, out
        assert f"{spec}:4:3: auth.api_keys: resolved to no keys" in out and "Traceback" not in out


def test_keys_from_the_environment_or_none(served) -> None:
    spec = toolbox_spec(auth={"api_keys": "${oc.env:SERVECTL_API_KEYS,null}"})
    open_server = served(spec, ready=False)  # unset: auth off, as the `,null` default says
    keyed = served(spec, env={"SERVECTL_API_KEYS": f"{KEY},other"}, ready=False)  # both start at once
    open_server.wait_ready()
    assert httpx.post(open_server.url + "/predict", json={"x": 2}).status_code == 200
    keyed.wait_ready()
    assert httpx.post(keyed.url + "/predict", json={"x": 2}).status_code == 401
    assert httpx.post(keyed.url + "/predict", json={"x": 2}, headers=AUTH).json()["y"] == 4.0


@pytest.mark.parametrize(
    "content", [b"\x08\x07\x12\x07pytorch\x1a\x032.1:\xe8\x01\n\xff\xfe\x00\x01onnx", b"handler: x.py\n\x00\x00\x00"]
)
def test_binary_spec_is_a_one_line_error(tmp_path: Path, content: bytes) -> None:
    spec = tmp_path / "model.onnx"
    spec.write_bytes(content)
    runs = [  # both at once
        subprocess.Popen(
            [sys.executable, "-m", "servectl", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        for command in (["validate", str(spec)], ["serve", str(spec), f"server.port={free_port()}"])
    ]
    for proc in runs:
        stdout, stderr = proc.communicate(timeout=60)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr and "Error:" not in done.stderr
        [problem] = [line for line in done.stderr.splitlines() if str(spec) in line]
        assert "cannot read: not a text" in problem and "YAML file" in problem
