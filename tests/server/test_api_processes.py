"""Pieces of server.api_processes, in-process: the shared port, metrics added up."""

from __future__ import annotations

import socket
from pathlib import Path

import msgspec
import pytest
from prometheus_client import generate_latest

from servectl.metrics import Metrics
from servectl.metrics_share import SharedCounts, retire
from servectl.server.listen import ListenError, bind, bind_group


def test_a_group_shares_one_port_and_a_port_in_use_is_refused_not_joined() -> None:
    groups = bind_group("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for group in groups for sock in group}
        assert len(groups) == 3 and len(ports) == 1
        with pytest.raises(ListenError, match="in use"):
            bind_group("127.0.0.1", ports.pop(), 2)  # another server's port: refused, never shared
    finally:
        for sock in (s for group in groups for s in group):
            sock.close()
    held = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ListenError):
            bind_group("127.0.0.1", held[0].getsockname()[1], 1)
    finally:
        held[0].close()
    assert socket.SO_REUSEPORT  # Linux: the kernel spreads connections over the group


def test_a_scrape_adds_up_every_process_counts(tmp_path: Path) -> None:
    first, other = Metrics(), Metrics()
    for metrics, n in ((first, 3), (other, 5)):
        for _ in range(n):
            metrics.observe_request("m", "/predict", 200, 0.002)
        model = metrics.model("m")
        model.batch_size.observe(n)
        model.drop("timeout")
        model.gauge("servectl_queue_depth", lambda n=n: {"": float(n)})
    first.model("m").gauge("servectl_workers_ready", lambda: {"": 2.0})  # the owner's alone
    first.shared = SharedCounts(str(tmp_path), 0, lambda: {"metrics": first.dump(), "usage": {}})
    (tmp_path / "metrics-1.msgpack").write_bytes(msgspec.msgpack.encode({"metrics": other.dump(), "usage": {}}))
    text = first.render()[0].decode()
    assert 'servectl_requests_total{model="m",route="/predict",status="200"} 8.0' in text
    assert 'servectl_request_duration_seconds_count{model="m",route="/predict"} 8.0' in text
    assert 'servectl_batch_size_count{model="m"} 2.0' in text
    assert 'servectl_requests_dropped_total{model="m",reason="timeout"} 2.0' in text
    assert 'servectl_queue_depth{model="m"} 8.0' in text
    assert 'servectl_workers_ready{model="m"} 2.0' in text
    alone = generate_latest(first.registry).decode()  # its own registry still holds its own counts
    assert 'servectl_requests_total{model="m",route="/predict",status="200"} 3.0' in alone


def test_the_counts_of_a_dead_process_stay_counted_without_its_gauges(tmp_path: Path) -> None:
    first, dead = Metrics(), Metrics()
    first.shared = SharedCounts(str(tmp_path), 0, lambda: {"metrics": first.dump(), "usage": {}})
    for _ in range(4):
        dead.observe_request("m", "/predict", 200, 0.002)
    dead.model("m").gauge("servectl_queue_depth", lambda: {"": 7.0})
    (tmp_path / "metrics-1.msgpack").write_bytes(msgspec.msgpack.encode({"metrics": dead.dump(), "usage": {}}))
    retire(str(tmp_path), 1, 1)  # API process 1 died; another starts counting from 0
    (tmp_path / "metrics-1.msgpack").write_bytes(msgspec.msgpack.encode({"metrics": Metrics().dump(), "usage": {}}))
    text = first.render()[0].decode()
    assert 'servectl_requests_total{model="m",route="/predict",status="200"} 4.0' in text
    assert 'servectl_queue_depth{model="m"} 7.0' not in text  # what it held went with it
    assert (tmp_path / "metrics-0.msgpack").exists()  # a scrape writes its own counts first
