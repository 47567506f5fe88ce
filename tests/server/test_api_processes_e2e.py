"""server.api_processes: several API processes on one port, each reaching every worker."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from support.servers import Server
from support.specs import streamer_spec, toolbox_spec

ADMIN = "admin-key-for-tests"


def spec(**sections: dict) -> dict:
    """Two API processes in front of one worker: whatever a process sends, that worker gets."""
    return toolbox_spec(server={"api_processes": 2, "access_log": False}, **sections)


def clients_of_each(server: Server, tries: int = 200) -> dict[int, httpx.Client]:
    """A keep-alive connection to each API process (the kernel picks one per connection)."""
    found: dict[int, httpx.Client] = {}
    for _ in range(tries):
        client = httpx.Client(base_url=server.url, timeout=30, headers=server.headers)
        index = client.get("/info").json()["api_process"]["index"]
        if index in found:
            client.close()
        else:
            found[index] = client
        if len(found) == 2:
            return found
    raise AssertionError(f"connections reached API processes {sorted(found)} only, in {tries} tries")


def eventually(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def test_every_api_process_serves_through_the_same_worker_and_metrics_add_up(serve) -> None:
    server = serve(spec())
    clients = clients_of_each(server)
    before = server.metric("servectl_requests_total", route="/predict", status="200")
    pids = set()
    for index, client in clients.items():
        for i in range(5):
            r = client.post("/predict", json={"x": i + index})
            assert r.status_code == 200 and r.json()["y"] == (i + index) ** 2
            pids.add(r.json()["pid"])
        assert client.get("/info").json()["stats"]["batches"] >= 5  # its own scheduler sent them
    assert len(pids) == 1, "one worker answers both API processes"
    # a scrape reaches one process, and counts what both answered (the other's within a second)
    eventually(lambda: server.metric("servectl_requests_total", route="/predict", status="200") == before + 10)
    assert server.metric("servectl_workers_ready") == 1  # the workers' own figures are counted once
    for client in clients.values():  # /stats adds up every process's answers too, whichever answers
        eventually(lambda client=client: client.get("/stats").json()["models"]["toolbox"]["by_status"]["200"] == 10)
        stats = client.get("/stats").json()["models"]["toolbox"]
        assert stats["batches"]["count"] >= 10 and stats["latency_ms"]["window"] == 10
    for client in clients.values():
        client.close()


def test_a_crash_answers_every_process_requests_and_the_replacement_serves_both(serve) -> None:
    server = serve(spec(batching={"max_batch_size": 1}))
    clients = clients_of_each(server)
    pid = clients[0].post("/predict", json={"x": 1}).json()["pid"]
    answers: dict[int, httpx.Response] = {}

    def slow(index: int) -> None:
        answers[index] = clients[index].post("/predict", json={"sleep": 3})

    threads = [threading.Thread(target=slow, args=(i,)) for i in clients]
    for t in threads:
        t.start()
    eventually(lambda: server.metric("servectl_worker_inflight") == 2)  # one running, one in its inbox
    os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join(30)
    for index in clients:  # held by the worker for either process: answered, not hanging
        assert answers[index].status_code == 503, answers[index].text
        assert answers[index].json()["error"]["type"] == "worker_crashed"
    eventually(lambda: httpx.get(server.url + "/ready").status_code == 200, 30)
    for client in clients.values():
        eventually(lambda client=client: client.post("/predict", json={"x": 3}).status_code == 200)
        assert client.post("/predict", json={"x": 3}).json()["y"] == 9
    # the owner counts the restart; a scrape of the other process sees it within a second
    eventually(lambda: server.metric("servectl_worker_restarts_total", reason="crashed") == 1)


def test_a_hang_seen_by_the_other_process_has_the_owner_replace_the_worker(serve) -> None:
    server = serve(spec(limits={"timeout_s": 1}, supervisor={"hang_grace_s": 0.5}))
    clients = clients_of_each(server)
    r = clients[1].post("/predict", json={"hang": True})
    assert r.status_code == 504
    eventually(lambda: server.metric("servectl_worker_restarts_total", reason="hung") == 1)
    eventually(lambda: clients[1].post("/predict", json={"x": 2}).status_code == 200, 30)
    assert "API process 1" in server.log()


def test_a_reload_asked_of_the_other_process_rolls_the_workers_for_both(serve) -> None:
    server = serve(spec(auth={"admin_keys": [ADMIN]}))
    server.headers = {"Authorization": f"Bearer {ADMIN}"}  # /info needs a key while keys exist (the model is open)
    clients = clients_of_each(server)
    old = clients[0].post("/predict", json={"x": 1}).json()["pid"]
    r = clients[1].post("/admin/models/toolbox/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json()["reloaded"] is True, r.text
    for client in clients.values():  # both moved to the new worker
        eventually(lambda client=client: client.post("/predict", json={"x": 1}).json()["pid"] != old)
    r = clients[1].post("/admin/models/nope/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]


def test_sigterm_to_the_first_process_drains_what_every_process_holds(serve) -> None:
    server = serve(spec(batching={"max_batch_size": 1}))
    clients = clients_of_each(server)
    answers: dict[int, httpx.Response] = {}

    def slow(index: int) -> None:
        answers[index] = clients[index].post("/predict", json={"x": index, "sleep": 2})

    threads = [threading.Thread(target=slow, args=(i,)) for i in clients]
    for t in threads:
        t.start()
    eventually(lambda: server.metric("servectl_worker_inflight") == 2)
    os.kill(server.proc.pid, signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert {i: a.status_code for i, a in answers.items()} == {0: 200, 1: 200}
    assert answers[1].json()["y"] == 1
    assert server.proc.wait(30) == 0


def test_a_dead_api_process_is_started_again_and_nothing_it_did_is_lost(serve, tmp_path: Path) -> None:
    server = serve(streamer_spec(server={"api_processes": 2}, devices={"workers_per_device": 1}))
    clients = clients_of_each(server)
    for client in clients.values():
        assert client.post("/predict", json={"n": 1}).status_code == 200
    eventually(lambda: server.metric("servectl_requests_total", route="/predict", status="200") == 2)
    steps = tmp_path / "steps.log"
    old = clients[1].get("/info").json()["api_process"]["pid"]
    streaming = threading.Thread(
        target=lambda: _read_some(clients[1], {"n": 200, "delay": 0.02, "log_to": str(steps)}), daemon=True
    )
    streaming.start()
    eventually(lambda: steps.exists() and len(steps.read_text().splitlines()) > 3)
    os.kill(old, signal.SIGKILL)
    assert clients[0].post("/predict", json={"n": 1}).status_code == 200  # the first one serves on
    eventually(lambda: httpx.get(server.url + "/ready").status_code == 200, 30)
    done = len(steps.read_text().splitlines())
    time.sleep(0.5)  # the worker dropped the dead process's stream (200 steps would take 4 s)
    assert len(steps.read_text().splitlines()) <= done + 3 < 100
    # what the dead process answered stays counted: a counter never goes back
    assert server.metric("servectl_requests_total", route="/predict", status="200") >= 3
    again = clients_of_each(server)
    assert again[1].get("/info").json()["api_process"]["pid"] != old
    assert again[1].post("/predict", json={"n": 2}).status_code == 200
    assert "API process 1 exited with code -9: starting it again" in server.log()


def _read_some(client: httpx.Client, body: dict) -> None:
    with contextlib.suppress(httpx.HTTPError), client.stream("POST", "/predict", json=body) as r:
        for _ in r.iter_lines():
            pass


def test_draining_refuses_new_connections_at_once(serve) -> None:
    server = serve(streamer_spec(server={"api_processes": 2}, limits={"drain_s": 30}))
    clients = clients_of_each(server)
    streaming = threading.Thread(target=lambda: _read_some(clients[1], {"n": 100, "delay": 0.03}), daemon=True)
    streaming.start()
    time.sleep(0.3)
    os.kill(server.proc.pid, signal.SIGTERM)
    time.sleep(0.3)  # both processes drain: neither listens any more
    for _ in range(6):  # whichever socket the kernel would pick: refused, not queued
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/health", timeout=2)
    streaming.join(30)
    assert server.proc.wait(30) == 0
