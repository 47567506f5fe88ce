"""Prometheus metrics, owned by the API process so counts stay right with many workers.

prometheus-client renders them. The per-request ones are plain counters kept on the event
loop's thread (no locks: they cost well under a microsecond) and turned into metric
families only when `/metrics` is scraped; gauges are read from live state at scrape time.
Every model's runtime counts into a `ModelMetrics` of its own; every sample carries the
`model` label.
"""

from __future__ import annotations

import copy
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterator
from typing import Any, NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics

from servectl.metrics_share import SharedCounts

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LONGER = (120, 300, 600, 1800, 3600, 7200, 21600, 86400)


def latency_buckets(longest_s: float) -> tuple[float, ...]:
    """The latency buckets, reaching the longest deadline (a 10-minute generation must not
    land in +Inf): the defaults, then longer ones up to it, then it."""
    longer = tuple(b for b in _LONGER if b < longest_s)
    top = (longest_s,) if longest_s > LATENCY_BUCKETS[-1] else ()
    return LATENCY_BUCKETS + longer + top


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
RESTART_REASONS = ("crashed", "hung", "retry", "reload")
DROP_REASONS = ("timeout", "disconnected", "slow_reader", "shutting_down")  # each described in the metric's help
NO_MODEL = ""  # the label of answers no model gave (probes, docs, unknown paths)

Gauge = Callable[[], dict[str, float]]  # {label value, or "" for none: value}


class GaugeInfo(NamedTuple):
    """A metric read from live state at scrape time: its help, whether it has a `worker`
    label, and whether it only grows (exported as a counter)."""

    doc: str
    per_worker: bool = False
    counter: bool = False


GAUGES = {  # every gauge a runtime may register: one table, so the reference lists them all
    "servectl_queue_depth": GaugeInfo("Requests waiting for a worker"),
    "servectl_worker_inflight": GaugeInfo("Requests held by each worker", per_worker=True),
    "servectl_workers_ready": GaugeInfo("Workers that finished setup"),
    "servectl_worker_cpu_seconds": GaugeInfo(
        "CPU time (user and system) of each worker process", per_worker=True, counter=True
    ),
    "servectl_worker_resident_bytes": GaugeInfo("Resident memory of each worker process", per_worker=True),
    "servectl_worker_gpu_memory_bytes": GaugeInfo(
        "GPU memory each worker process holds (workers on CUDA, with the gpu extra)", per_worker=True
    ),
    "servectl_worker_gpu_utilization_ratio": GaugeInfo(
        "Utilisation of each worker's GPU (the GPU's, shared by the workers on it; with the gpu extra)",
        per_worker=True,
    ),
}


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

    def add(self, counts: list[int], total: float) -> None:
        """Another process's counts of the same buckets."""
        self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.sum += total

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


class ModelMetrics:
    """What one model's scheduler and supervisor count."""

    def __init__(self, model: str = NO_MODEL, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.model = model
        self.queue_time = FastHistogram(buckets)
        self.predict_time = FastHistogram(buckets)
        self.batch_size = FastHistogram(BATCH_BUCKETS)
        self.first_chunk = FastHistogram(buckets)
        self.chunks = 0
        self.tokens = 0
        self.restarts = dict.fromkeys(RESTART_REASONS, 0)
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.cache: dict[str, int] = {}  # cacheable requests by result: hit, miss, bypass
        self.rate_limited: dict[str, int] = {}  # refusals by the empty bucket: requests, tokens
        self.redis_errors: dict[str, int] = {}  # Redis calls that failed, by use: cache, rate_limit
        self.gauges: dict[str, tuple[str, Gauge, bool, bool]] = {}

    def restart(self, reason: str) -> None:
        self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def gauge(self, name: str, read: Gauge) -> None:
        """A gauge of `GAUGES` read at scrape time: `read` returns {worker label (or "" for none): value}."""
        info = GAUGES[name]
        self.gauges[name] = (info.doc, read, info.per_worker, info.counter)

    def dump(self) -> dict[str, Any]:
        """Its counts, as plain data (several API processes add theirs up)."""
        return {
            "hist": {attr: [getattr(self, attr).counts, getattr(self, attr).sum] for _, _, attr in _HISTOGRAMS},
            "counts": {attr: getattr(self, attr) for attr in _COUNTS},
            "by": {attr: getattr(self, attr) for attr in _BY_LABEL},
            "gauges": {name: [doc, read(), per, counter] for name, (doc, read, per, counter) in self.gauges.items()},
        }

    def add(self, dump: dict[str, Any]) -> None:
        """Add another process's counts (`dump`) to these."""
        for attr, (counts, total) in dump["hist"].items():
            getattr(self, attr).add(counts, total)
        for attr, count in dump["counts"].items():
            setattr(self, attr, getattr(self, attr) + count)
        for attr, by in dump["by"].items():
            mine = getattr(self, attr)
            for label, count in by.items():
                mine[label] = mine.get(label, 0) + count
        for name, (doc, values, per_worker, counter) in dump["gauges"].items():
            summed = dict(self.gauges[name][1]()) if name in self.gauges else {}
            for label, value in values.items():
                summed[label] = summed.get(label, 0) + value
            self.gauges[name] = (doc, _fixed(summed), per_worker, counter)


def _fixed(values: dict[str, float]) -> Gauge:
    return lambda: values


_COUNTS = ("chunks", "tokens")
_BY_LABEL = ("restarts", "dropped", "cache", "rate_limited", "redis_errors")
_HISTOGRAMS = (
    ("servectl_queue_seconds", "Time a request waited for a worker", "queue_time"),
    ("servectl_predict_seconds", "Worker time per batch (parse to serialize)", "predict_time"),
    ("servectl_batch_size", "Items per batch sent to a worker", "batch_size"),
    ("servectl_stream_first_chunk_seconds", "Time from queued to a stream's first chunk", "first_chunk"),
)


class Metrics:
    """Every metric one server exposes, in a registry of its own: answers by model, route
    and status, and each model's `ModelMetrics`."""

    def __init__(self, longest_s: float = LATENCY_BUCKETS[-1]) -> None:
        self.registry = CollectorRegistry()
        self.buckets = latency_buckets(longest_s)
        ProcessCollector(registry=self.registry)  # process_*: the API process's CPU, memory, files
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], FastHistogram] = {}
        self.models: dict[str, ModelMetrics] = {}
        self.last_answer: dict[str, float] = {}  # model -> wall-clock time of its last answer (Triton's stats)
        # answers and tokens by key name (auth.key_name_metrics only; else never counted)
        self.key_requests: dict[tuple[str, str, int], int] = {}  # (model, key name, status)
        self.key_tokens: dict[tuple[str, str, str], int] = {}  # (model, key name, prompt|completion)
        self.registry.register(self)  # a custom collector
        self.shared: SharedCounts | None = None  # the other API processes' counts (api_processes > 1)

    def model(self, name: str) -> ModelMetrics:
        """The metrics of model `name` (made on first use)."""
        found = self.models.get(name)
        if found is None:
            found = self.models[name] = ModelMetrics(name, self.buckets)
        return found

    def observe_request(self, model: str, route: str, status: int, seconds: float) -> None:
        key = (model, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.last_answer[model] = time.time()
        hist = self.latency.get((model, route))
        if hist is None:
            hist = self.latency[(model, route)] = FastHistogram(self.buckets)
        hist.observe(seconds)

    def observe_key(self, model: str, key: str, status: int, prompt: int, completion: int) -> None:
        """One answer of `model` to key name `key` (auth.key_name_metrics)."""
        counted = (model, key, status)
        self.key_requests[counted] = self.key_requests.get(counted, 0) + 1
        for kind, n in (("prompt", prompt), ("completion", completion)):
            if n:
                self.key_tokens[(model, key, kind)] = self.key_tokens.get((model, key, kind), 0) + n

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "servectl_requests", "HTTP requests answered", labels=["model", "route", "status"]
        )
        for (model, route, status), count in sorted(self.requests.items()):
            requests.add_metric([model, route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "servectl_request_duration_seconds", "End-to-end latency", labels=["model", "route"]
        )
        for (model, route), hist in sorted(self.latency.items()):
            latency.add_metric([model, route], hist.buckets(), hist.sum)
        yield latency
        if self.key_requests:  # auth.key_name_metrics: key names as labels only when the spec asks
            by_key = CounterMetricFamily(
                "servectl_key_requests", "Model answers by API key name", labels=["model", "key", "status"]
            )
            for (model, key, status), count in sorted(self.key_requests.items()):
                by_key.add_metric([model, key, str(status)], count)
            yield by_key
            tokens = CounterMetricFamily(
                "servectl_key_tokens", "Prompt and completion tokens by API key name", labels=["model", "key", "kind"]
            )
            for (model, key, kind), count in sorted(self.key_tokens.items()):
                tokens.add_metric([model, key, kind], count)
            yield tokens
        models = [self.models[name] for name in sorted(self.models)]
        for name, doc, attr in _HISTOGRAMS:
            histogram = HistogramMetricFamily(name, doc, labels=["model"])
            for m in models:
                hist = getattr(m, attr)
                histogram.add_metric([m.model], hist.buckets(), hist.sum)
            yield histogram
        for name, doc, attr in (
            ("servectl_stream_chunks", "Streamed chunks sent (rate: chunks/s)", "chunks"),
            ("servectl_generated_tokens", "Tokens generated (rate: tokens/s)", "tokens"),
        ):
            counter = CounterMetricFamily(name, doc, labels=["model"])
            for m in models:
                counter.add_metric([m.model], getattr(m, attr))
            yield counter
        for name, doc, attr, label in (
            (
                "servectl_worker_restarts",
                "Workers restarted, by why: crashed, hung (the watchdog), retry (a given-up slot tried again), "
                "reload (rolled to a new version)",
                "restarts",
                "reason",
            ),
            (
                "servectl_requests_dropped",
                "Requests dropped, by reason: timeout (still queued when limits.timeout_s passed; one at a worker "
                "is answered 504 but not counted), disconnected (its client left while it was still queued; one at "
                "a worker is cancelled, not counted), slow_reader (a stream whose client read too slowly: its "
                "generation stopped), shutting_down (still open, queued or at a worker, when limits.drain_s ran out)",
                "dropped",
                "reason",
            ),
            (
                "servectl_cache_requests",
                "Cacheable requests by result: hit, miss, bypass (Cache-Control: no-cache)",
                "cache",
                "result",
            ),
            ("servectl_rate_limited", "Requests refused by a rate limit, by its bucket", "rate_limited", "limit"),
            (
                "servectl_redis_errors",
                "Redis calls that failed (the answer was computed, unlimited or uncached), by use",
                "redis_errors",
                "use",
            ),
        ):
            counter = CounterMetricFamily(name, doc, labels=["model", label])
            for m in models:
                for reason, count in getattr(m, attr).items():
                    counter.add_metric([m.model, reason], count)
            yield counter
        yield from self._gauges(models)

    @staticmethod
    def _gauges(models: list[ModelMetrics]) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for m in models:
            for name, (doc, read, per_worker, counter) in m.gauges.items():
                family = families.get(name)
                if family is None:
                    labels = ["model", "worker"] if per_worker else ["model"]
                    kind = CounterMetricFamily if counter else GaugeMetricFamily
                    family = families[name] = kind(name, doc, labels=labels)
                for label, value in sorted(read().items()):
                    family.add_metric([m.model, label] if per_worker else [m.model], value)
        yield from families.values()

    def dump(self) -> dict[str, Any]:
        """Its counts, as plain data (several API processes add theirs up)."""
        return {
            "requests": [[*key, count] for key, count in self.requests.items()],
            "latency": [[model, route, hist.counts, hist.sum] for (model, route), hist in self.latency.items()],
            "last_answer": self.last_answer,
            "models": {name: m.dump() for name, m in self.models.items()},
            "key_requests": [[*key, count] for key, count in self.key_requests.items()],
            "key_tokens": [[*key, count] for key, count in self.key_tokens.items()],
        }

    def add(self, dump: dict[str, Any]) -> None:
        """Add another process's counts (`dump`) to these."""
        for model, route, status, count in dump["requests"]:
            key = (model, route, status)
            self.requests[key] = self.requests.get(key, 0) + count
        for model, route, counts, total in dump["latency"]:
            hist = self.latency.get((model, route))
            if hist is None:
                hist = self.latency[(model, route)] = FastHistogram(self.buckets)
            hist.add(counts, total)
        for model, at in dump["last_answer"].items():
            self.last_answer[model] = max(at, self.last_answer.get(model, 0.0))
        for name, counts in dump["models"].items():
            self.model(name).add(counts)
        for model, key, status, count in dump.get("key_requests", []):
            self.key_requests[(model, key, status)] = self.key_requests.get((model, key, status), 0) + count
        for model, key, kind, count in dump.get("key_tokens", []):
            self.key_tokens[(model, key, kind)] = self.key_tokens.get((model, key, kind), 0) + count

    def totals(self) -> Metrics:
        """These counts, or with several API processes every one's added up."""
        if self.shared is None:
            return self
        total = Metrics(self.buckets[-1])
        total.buckets = self.buckets
        for counts in self.shared.snapshot():
            total.add(counts["metrics"])
        return total

    def render(
        self, accept: str = "", models: Collection[str] | None = None, key: str | None = None
    ) -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics when the scraper asks for it.
        `models`: only the samples of these models (and those of none: the process's own);
        `key`: only this key name's samples of those by key name."""
        registry = self.totals().registry
        if models is not None or key is not None:
            registry = _only(registry, models, key)
        if "application/openmetrics-text" in accept:
            return openmetrics.generate_latest(registry), openmetrics.CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


class _Only:
    """The samples of some models (and of some key name) only, from another registry."""

    def __init__(self, source: CollectorRegistry, models: Collection[str] | None, key: str | None) -> None:
        self.source = source
        self.models = models
        self.key = key

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            kept = copy.copy(family)
            kept.samples = [sample for sample in family.samples if self._shown(sample.labels)]
            yield kept

    def _shown(self, labels: dict[str, str]) -> bool:
        model, key = labels.get("model"), labels.get("key")
        if model is not None and self.models is not None and model not in self.models:
            return False
        return key is None or self.key is None or key == self.key


def _only(source: CollectorRegistry, models: Collection[str] | None, key: str | None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Only(source, models, key))
    return registry
