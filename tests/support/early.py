"""Servers and runs started when the session starts, at low priority, in the CPU time other
tests leave (tests/conftest.py's `_start_servers_early`), taken later by the tests that use them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from support.paths import ROOT
from support.servers import Server, lower_priority, write_spec
from support.specs import gpt2_openai_spec, minilm_openai_spec

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
                preexec_fn=(lambda: lower_priority(nice)) if nice else None,
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
