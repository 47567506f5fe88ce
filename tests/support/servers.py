"""Real `servectl serve` subprocesses on free 127.0.0.1 ports, raw sockets to them, and an
app on uvicorn in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from servectl.bench.runner import free_port

from support.paths import ROOT

__all__ = [
    "Server",
    "connect",
    "free_port",
    "lower_priority",
    "protocol_server",
    "read_response",
    "stop_later",
    "write_spec",
]


def lower_priority(nice: int) -> None:
    """In a child, after its setsid: a lower CPU priority for it and the workers it starts. With
    autogroup scheduling each session is scheduled as one group: the group's nice counts too."""
    os.nice(nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
        group.write(str(nice))


class Server:
    """One `servectl serve` process: started, probed, stopped by its own pid."""

    def __init__(
        self,
        spec_path: Path,
        env: dict[str, str] | None = None,
        overrides: list[str] = (),
        log_dir: Path | None = None,
        nice: int = 0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="servectl-test-"))) / (spec_path.stem + ".log")
        self._log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.pop("SERVECTL_API_KEYS", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "servectl", "serve", str(spec_path), f"server.port={self.port}", *overrides],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
            start_new_session=True,  # its own process group: a test may signal the whole group
            preexec_fn=(lambda: lower_priority(nice)) if nice else None,
        )

    def wait_live(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not live in {timeout}s:\n{self.log()}")

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_live(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TimeoutException:  # (api_processes: a connection the kernel gave a process still starting)
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def begin_stop(self) -> None:
        """Send the SIGTERM that `stop` waits on, once (a second one forces the exit)."""
        if self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    _terminated = False

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.begin_stop()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample's values whose labels include `labels`."""
        total = 0.0
        for line in httpx.get(self.url + "/metrics", timeout=5, headers=self.headers).text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, label_text = sample.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    headers: dict[str, str] = {}


_stopping: list[Server] = []  # servers sent SIGTERM by an earlier test's teardown


def stop_later(servers: list[Server]) -> None:
    """SIGTERM a test's servers and let them exit while the next test runs; those of the test
    before (long since exited) are waited for and closed here, the last ones at the session's end."""
    for server in _stopping:
        server.stop()
    _stopping[:] = servers
    for server in servers:
        server.begin_stop()


def connect(server, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, read exactly (a pipelined one may
    follow): (status, headers, body); status 0 if the server closed or reset first."""
    head = b""
    try:
        while not head.endswith(b"\r\n\r\n"):
            byte = sock.recv(1)
            if not byte:
                return 0, {}, head
            head += byte
        lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        body = b""
        while len(body) < int(headers.get("content-length", 0)):
            chunk = sock.recv(int(headers["content-length"]) - len(body))
            if not chunk:
                break
            body += chunk
    except ConnectionResetError:
        return 0, {}, head
    return int(lines[0].split()[1]), headers, body


def write_spec(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def protocol_server(app: Any, http: type) -> AsyncIterator[int]:
    """`app` on uvicorn in this event loop with an HTTP protocol class (servectl's, bound to
    its limits), on a free 127.0.0.1 port: the port."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", http=http)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
