"""Prometheus metrics, owned by the API process so counts stay right with many workers.

prometheus-client renders them. The per-request ones are plain counters kept on the event
loop's thread (no locks: they cost well under a microsecond) and turned into metric
families only when `/metrics` is scraped; gauges are read from live state at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class FastHistogram:
    """Bucket counts and a sum, for one thread; exported as a Prometheus histogram."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


class Metrics:
    """Every metric servectl exposes, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, FastHistogram] = {}
        self.queue_time = FastHistogram(LATENCY_BUCKETS)
        self.predict_time = FastHistogram(LATENCY_BUCKETS)
        self.batch_size = FastHistogram(BATCH_BUCKETS)
        self.first_chunk = FastHistogram(LATENCY_BUCKETS)
        self.chunks = 0
        self.tokens = 0
        self.restarts = Counter(
            "servectl_worker_restarts",
            "Workers restarted, by why: crashed, hung (the watchdog), retry (a given-up slot tried again)",
            ["reason"],
            registry=self.registry,
        )
        for why in ("crashed", "hung", "retry"):
            self.restarts.labels(why)
        self.dropped = Counter(
            "servectl_requests_dropped",
            "Requests whose work was dropped before reaching a worker",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("timeout", "disconnected", "slow_reader", "shutting_down"):
            self.dropped.labels(reason)
        self.gauges: dict[str, tuple[str, Callable[[], dict[str, float]]]] = {}
        self.registry.register(self)  # a custom collector

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = FastHistogram(LATENCY_BUCKETS)
        hist.observe(seconds)

    def gauge(self, name: str, doc: str, read: Callable[[], dict[str, float]]) -> None:
        """A gauge read at scrape time: `read` returns {label value or "": value}."""
        self.gauges[name] = (doc, read)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("servectl_requests", "HTTP requests answered", labels=["route", "status"])
        for (route, status), count in sorted(self.requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily("servectl_request_duration_seconds", "End-to-end latency", labels=["route"])
        for route, hist in sorted(self.latency.items()):
            latency.add_metric([route], hist.buckets(), hist.sum)
        yield latency
        for name, doc, hist in (
            ("servectl_queue_seconds", "Time a request waited for a worker", self.queue_time),
            ("servectl_predict_seconds", "Worker time per batch (parse to serialize)", self.predict_time),
            ("servectl_batch_size", "Items per batch sent to a worker", self.batch_size),
            ("servectl_stream_first_chunk_seconds", "Time from queued to a stream's first chunk", self.first_chunk),
        ):
            histogram = HistogramMetricFamily(name, doc)
            histogram.add_metric([], hist.buckets(), hist.sum)
            yield histogram
        chunks = CounterMetricFamily("servectl_stream_chunks", "Streamed chunks sent (rate: chunks/s)")
        chunks.add_metric([], self.chunks)
        yield chunks
        tokens = CounterMetricFamily("servectl_generated_tokens", "Tokens generated (rate: tokens/s)")
        tokens.add_metric([], self.tokens)
        yield tokens
        for name, (doc, read) in self.gauges.items():
            values = read()
            labelled = [k for k in values if k]
            gauge = GaugeMetricFamily(name, doc, labels=["worker"] if labelled else None)
            for label, value in sorted(values.items()):
                gauge.add_metric([label] if labelled else [], value)
            yield gauge

    def render(self) -> bytes:
        return generate_latest(self.registry)
