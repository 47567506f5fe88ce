"""Prometheus metrics, owned by the API process so counts stay right with many workers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Every metric servectl exposes, in a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("servectl_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram(
            "servectl_request_duration_seconds", "End-to-end latency", ["route"], buckets=_LATENCY, registry=r
        )
        self.queue_time = Histogram(
            "servectl_queue_seconds", "Time a request waited for a worker", buckets=_LATENCY, registry=r
        )
        self.predict_time = Histogram(
            "servectl_predict_seconds", "Worker time per batch (decode to encode)", buckets=_LATENCY, registry=r
        )
        self.batch_size = Histogram(
            "servectl_batch_size", "Items per batch sent to a worker", buckets=_BATCH, registry=r
        )
        self.queue_depth = Gauge("servectl_queue_depth", "Requests waiting for a worker", registry=r)
        self.inflight = Gauge("servectl_worker_inflight", "Requests held by each worker", ["worker"], registry=r)
        self.restarts = Counter("servectl_worker_restarts", "Workers restarted", registry=r)
        self.workers_ready = Gauge("servectl_workers_ready", "Workers that finished setup", registry=r)
        self.dropped = Counter(
            "servectl_requests_dropped",
            "Requests whose work was dropped before reaching a worker",
            ["reason"],
            registry=r,
        )
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request; label lookups are cached for the hot path."""
        key = (route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, str(status))
        child.inc()
        hist = self._latency_children.get(route)
        if hist is None:
            hist = self._latency_children[route] = self.latency.labels(route)
        hist.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
