"""The fixtures and hooks of the test session; what they use lives in `tests/support/`
(servers, specs, servers started early, stock uvicorn, a fake loop: see its __init__)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.early import VALIDATE_ALL, EarlyServers, ExampleServers, NamespacedRun
from support.servers import Server, stop_later, write_spec
from support.stock import StockUvicorn, running_stock_uvicorn


@pytest.fixture(scope="session")
def stock_uvicorn() -> Iterator[StockUvicorn]:
    with running_stock_uvicorn() as stock:
        yield stock


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
    stop_later(started)


@pytest.fixture(scope="session", autouse=True)
def _stop_the_last_servers() -> Iterator[None]:
    yield
    stop_later([])


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


@pytest.fixture(scope="session")
def example_servers(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServers]:
    servers = ExampleServers(models, tmp_path_factory.mktemp("examples"))
    yield servers
    servers.stop_all()


@pytest.fixture(scope="session")
def early_servers(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EarlyServers]:
    servers = EarlyServers(models, tmp_path_factory.mktemp("early"))
    yield servers
    for server in servers.servers.values():
        server.stop()


@pytest.fixture(scope="session")
def ray_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespacedRun]:
    run = NamespacedRun(tmp_path_factory.mktemp("ray"))
    yield run
    if run.proc is not None and run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait(10)


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


_EARLY_FIXTURES = ("example_servers", "early_servers")


def _uses_early(item: pytest.Item) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in _EARLY_FIXTURES)


# what makes a test end-to-end: a real server or process, or a model built on disk (`models`)
_E2E_FIXTURES = frozenset(
    {"serve", "shared_serve", "example_servers", "early_servers", "ray_run", "stock_uvicorn", "models"}
)


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
