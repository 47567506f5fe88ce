"""Shared fixtures: real `servectl serve` subprocesses on free 127.0.0.1 ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from servectl.bench.runner import free_port

ROOT = Path(__file__).resolve().parent.parent
TOOLBOX = ROOT / "tests" / "handlers" / "toolbox.py"


def _lower_priority(nice: int) -> None:
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
            preexec_fn=(lambda: _lower_priority(nice)) if nice else None,
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


class StockUvicorn:
    """Stock uvicorn (httptools) serving tests/apps/square.py: the peer of raw-framing comparisons."""

    def __init__(self, port: int) -> None:
        self.port = port


@pytest.fixture(scope="session")
def stock_uvicorn() -> Iterator[StockUvicorn]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "tests" / "apps"), "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--http", "httptools", "--log-level", "warning", "--no-access-log", "square:app"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "stock uvicorn did not start"
                time.sleep(0.05)
        yield StockUvicorn(port)
    finally:
        proc.terminate()
        proc.wait(10)


STREAMER = ROOT / "tests" / "handlers" / "streamer.py"


def streamer_spec(**sections: dict) -> dict:
    """The streaming test handler, one request per batch, streamed as NDJSON by default."""
    spec: dict = {
        "handler": str(STREAMER),
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 1},
        "api": {"stream": True},
        "server": {"access_log": False},
    }
    for key, value in sections.items():
        spec.setdefault(key, {}).update(value)
    return spec


def echo_llm_spec() -> dict:
    """The example custom OpenAI handler (complete/render/count_tokens/embed), on the CPU."""
    return {
        "name": "echo-llm",
        "handler": str(ROOT / "handlers" / "echo_llm.py"),
        "model": {"backend": "python"},
        "api": {"kind": "openai"},
        "devices": {"accelerator": "cpu"},
    }


def toolbox_spec(**sections: dict) -> dict:
    spec: dict = {
        "name": "toolbox",
        "handler": str(TOOLBOX),
        "devices": {"accelerator": "cpu", "workers_per_device": 1},
        "batching": {"max_batch_size": 8, "max_wait_ms": 5},
        "limits": {"timeout_s": 10, "max_queue": 256},
        "server": {"access_log": True},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            spec.setdefault(key, {}).update(value)
        else:
            spec[key] = value
    return spec


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start servers for a test; every one is stopped at the end."""
    started: list[Server] = []

    def start(spec: dict, env: dict[str, str] | None = None, ready: bool = True, overrides: list[str] = ()) -> Server:
        server = Server(write_spec(tmp_path, spec, f"spec{len(started)}.yaml"), env, list(overrides), tmp_path)
        started.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    _stop_later(started)


_stopping: list[Server] = []  # servers sent SIGTERM by an earlier test's teardown


def _stop_later(servers: list[Server]) -> None:
    """SIGTERM a test's servers and let them exit while the next test runs; those of the test
    before (long since exited) are waited for and closed here, the last ones at the session's end."""
    for server in _stopping:
        server.stop()
    _stopping[:] = servers
    for server in servers:
        server.begin_stop()


@pytest.fixture(scope="session", autouse=True)
def _stop_the_last_servers() -> Iterator[None]:
    yield
    _stop_later([])


@pytest.fixture(scope="session")
def shared_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """Servers shared by every test (of any module) that asks for the same spec and environment,
    started on first use and stopped at the end of the session. Only for tests that leave the
    server as they found it: no crash, hang, drain, stop or signal that ends anything. A test
    that counts (metrics, log lines, items seen) counts the change it made, not the total."""
    servers: dict[str, Server] = {}

    def start(spec: dict, env: dict[str, str] | None = None) -> Server:
        key = json.dumps([spec, env or {}], sort_keys=True)
        server = servers.get(key)
        if server is None or server.proc.poll() is not None:
            folder = tmp_path_factory.mktemp("shared")
            server = servers[key] = Server(write_spec(folder, spec), env, log_dir=folder)
            server.wait_ready()
        return server

    yield start
    for server in servers.values():
        server.begin_stop()
    for server in servers.values():
        server.stop()


# `servectl validate`'s checks of each spec given
VALIDATE_ALL = """
import sys
from servectl.spec import load_spec
from servectl.cli.checks import check_spec
for path in sys.argv[1:]:
    issues, _ = check_spec(load_spec(path, ["devices.accelerator=cpu"]))
    print(path, issues or "ok")
"""


class ExampleServers:
    """Every configs/*.yaml served as written (on the CPU, with the example models), all started
    together on first use and shared: by the test that each one serves and stops cleanly, and by
    the tests of the runners and clients that use one."""

    def __init__(self, models: Path, folder: Path) -> None:
        self.env = {"SERVECTL_MODELS": str(models)}  # SERVECTL_API_KEYS unset: the configs' `,null` turns auth off
        self.folder = folder
        self.servers: dict[str, Server] = {}

    @staticmethod
    def configs() -> list[Path]:
        """The single-model configs (serving several models in one server is not built yet;
        tests/test_spec_models.py validates configs/multi.yaml)."""
        return sorted(c for c in (ROOT / "configs").glob("*.yaml") if "models" not in yaml.safe_load(c.read_text()))

    def validation(self, script: str, nice: int = 0) -> subprocess.Popen[str]:
        """`script` run once on every config, in one fresh process (started early with the servers)."""
        if self._validation is None:
            self._validation = subprocess.Popen(
                [sys.executable, "-c", script, *map(str, self.configs())],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=ROOT,
                env={**{k: v for k, v in os.environ.items() if k != "SERVECTL_API_KEYS"}, **self.env},
                start_new_session=True,
                preexec_fn=(lambda: _lower_priority(nice)) if nice else None,
            )
        return self._validation

    _validation: subprocess.Popen[str] | None = None

    def launch(self, nice: int = 0) -> None:
        """Start every config not running now (at once: their start-ups overlap), without waiting."""
        for config in self.configs():
            server = self.servers.get(config.stem)
            if server is None or server.proc.poll() is not None:
                log_dir = Path(tempfile.mkdtemp(prefix=config.stem + "-", dir=self.folder))
                server = Server(config, self.env, ["devices.accelerator=cpu"], log_dir, nice=nice)
                self.servers[config.stem] = server

    def start_all(self) -> dict[str, Server]:
        """Every config served and ready (started now, unless running already)."""
        self.launch()
        for server in self.servers.values():
            server.wait_ready(300)
        return dict(self.servers)

    def __getitem__(self, name: str) -> Server:
        return self.start_all()[name]

    def stop_all(self) -> dict[str, int]:
        """Stop every server: {config name: exit status}."""
        for server in self.servers.values():
            server.begin_stop()
        codes = {name: server.stop() for name, server in self.servers.items()}
        self.servers.clear()
        return codes


@pytest.fixture(scope="session")
def example_servers(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServers]:
    servers = ExampleServers(models, tmp_path_factory.mktemp("examples"))
    yield servers
    servers.stop_all()


def gpt2_openai_spec(models: Path) -> dict:
    """The tiny GPT-2 behind the OpenAI routes, with a key."""
    return {
        "name": "tiny-gpt2",
        "model": {
            "backend": "transformers",
            "task": "text-generation",
            "path": str(models / "tiny-gpt2"),
            "max_new_tokens": 8,
        },
        "api": {"kind": "openai"},
        "auth": {"api_keys": ["sk-test"]},
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 8},
    }


def minilm_openai_spec(models: Path) -> dict:
    """configs/embeddings.yaml's MiniLM behind the OpenAI routes."""
    from servectl.spec import load_spec

    spec = load_spec(ROOT / "configs" / "embeddings.yaml", ["devices.accelerator=cpu"])
    return {
        "name": "minilm",
        "model": spec.model.model_dump(),
        "api": {"kind": "openai"},
        "devices": {"accelerator": "cpu"},
        "batching": {"max_batch_size": 32},
    }


class EarlyServers:
    """Fresh servers for tests that need a slow-starting model, started (at low priority) when the
    session starts; each is taken by one test or module, which stops it."""

    SPECS: dict[str, Callable[[Path], dict]] = {"gpt2-openai": gpt2_openai_spec, "minilm-openai": minilm_openai_spec}

    def __init__(self, models: Path, folder: Path) -> None:
        self.models = models
        self.folder = folder
        self.servers: dict[str, Server] = {}

    def launch(self, name: str, nice: int = 0) -> Server:
        spec = write_spec(self.folder, self.SPECS[name](self.models), f"{name}.yaml")
        server = self.servers[name] = Server(spec, log_dir=self.folder, nice=nice)
        return server

    def take(self, name: str) -> Server:
        """The server started early for `name` (started now if none was), ready; the caller stops it."""
        server = self.servers.pop(name, None) or self.launch(name)
        self.servers.pop(name, None)
        server.wait_ready(300)
        return server


@pytest.fixture(scope="session")
def early_servers(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EarlyServers]:
    servers = EarlyServers(models, tmp_path_factory.mktemp("early"))
    yield servers
    for server in servers.servers.values():
        server.stop()


_EARLY_FIXTURES = ("example_servers", "early_servers")


def _uses_early(item: pytest.Item) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in _EARLY_FIXTURES)


# what makes a test end-to-end: a real server, a model built on disk, a subprocess of servectl
_E2E_FIXTURES = frozenset({"serve", "shared_serve", "example_servers", "early_servers", "ray_run", "stock_uvicorn"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start real servers or processes are marked `e2e` (`-m "not e2e"`: the fast
    ones alone); the modules that use servers started early run last (each module's order
    kept): those servers start at low priority when the session starts, in the CPU time
    other tests leave."""
    for item in items:
        if item.path.stem.endswith("_e2e") or _E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    late = {item.path for item in items if _uses_early(item)}
    items.sort(key=lambda item: item.path in late)


class NamespacedRun:
    """`tests/runtime/test_ray_e2e.py` run by pytest inside a loopback-only network namespace
    (Ray must not reach beyond loopback), started when the session starts at low priority:
    it mostly waits for Ray, in the time other tests leave; its test collects the result."""

    def __init__(self, folder: Path) -> None:
        self.reason = self._cannot()
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = folder / "ray-run.log"

    @staticmethod
    def _cannot() -> str | None:
        if os.environ.get("SERVECTL_RAY_NETNS") == "1":
            return "inside the loopback-only namespace already"
        if shutil.which("unshare") is None or os.geteuid() != 0:
            return "needs root and unshare(1) to give Ray a loopback-only network namespace"
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
        return f"unshare -n is not allowed here: {probe.stderr.strip()}" if probe.returncode else None

    def start(self) -> None:
        if self.reason is None and self.proc is None:
            test = ROOT / "tests" / "runtime" / "test_ray_e2e.py"
            command = (
                "ip link set lo up && exec env SERVECTL_RAY_NETNS=1 nice -n 19 "
                f"{sys.executable} -m pytest -q -p no:cacheprovider -x {test}"
            )
            with open(self.out, "wb") as out:
                self.proc = subprocess.Popen(["unshare", "-n", "sh", "-c", command], stdout=out, stderr=out, cwd=ROOT)

    def result(self, timeout: float = 420) -> tuple[int, str]:
        """The run's exit code and output (started now if it was not)."""
        self.start()
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        return code, self.out.read_text(errors="replace")


@pytest.fixture(scope="session")
def ray_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespacedRun]:
    run = NamespacedRun(tmp_path_factory.mktemp("ray"))
    yield run
    if run.proc is not None and run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait(10)


@pytest.fixture(scope="session", autouse=True)
def _start_servers_early(request: pytest.FixtureRequest) -> None:
    import importlib.util

    items = request.session.items
    if any("ray_run" in getattr(item, "fixturenames", ()) for item in items):
        request.getfixturevalue("ray_run").start()
    if not all(importlib.util.find_spec(name) for name in ("torch", "transformers")):
        return  # the tests that use them are skipped
    # nice 19: idle priority (their workers inherit it), the timing-sensitive tests keep the CPU
    if any("example_servers" in getattr(item, "fixturenames", ()) for item in items):
        examples = request.getfixturevalue("example_servers")
        examples.launch(nice=19)
        if any(item.name == "test_every_example_config_validates_and_serves" for item in items):
            examples.validation(VALIDATE_ALL, nice=19)
    if any("early_servers" in getattr(item, "fixturenames", ()) for item in items):
        early = request.getfixturevalue("early_servers")
        for name in EarlyServers.SPECS:
            with contextlib.suppress(Exception):  # e.g. a model package missing: its test skips or says why
                early.launch(name, nice=19)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example models of `python -m servectl.examples.build`, built once per session."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from servectl.examples.build import build_classifier, build_gpt2, build_torch

    out = tmp_path_factory.mktemp("models")
    build_torch(out)
    build_gpt2(out / "tiny-gpt2")
    build_classifier(out / "tiny-classifier")
    return out


def minilm_reference(path: Path, texts: list[str]) -> list[list[float]]:
    """MiniLM embeddings computed in-process one text at a time (no padding): the ground truth."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    out = []
    for text in texts:
        tokens = tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**tokens).last_hidden_state
        out.append(torch.nn.functional.normalize(hidden.mean(1), dim=1)[0].tolist())
    return out


def resolved(document: dict, node: dict) -> dict:
    """An OpenAPI schema with its `$ref` to a component followed."""
    ref = node.get("$ref")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else node
