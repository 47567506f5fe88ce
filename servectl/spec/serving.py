"""How a model is served: `devices`, `batching`, `limits` (rates, cache), `scaling`, `supervisor`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from servectl.spec.base import Section


class DevicesSpec(Section):
    """`devices:`: which devices a model's workers run on (CPU or which GPUs) and how many worker
    processes each device gets; with `runtime.kind: ray` the same count of replicas."""

    accelerator: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="`auto`: CUDA when torch is installed and sees a GPU (checked in a subprocess: the API process "
        "never imports torch), else CPU, said on screen. `cpu` or `cuda`.",
    )
    ids: Literal["auto"] | int | list[int] = Field(
        "auto",
        description="`auto`: every visible GPU; `N` (>= 1): the first N; `[0, 3]`: those GPUs (distinct ids >= 0, "
        "not empty); a GPU that is not visible is an error. Ignored on CPU.",
    )
    workers_per_device: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes per GPU (each with `CUDA_VISIBLE_DEVICES` set to its one GPU, seen as "
        "`cuda:0`), or on the CPU. With Ray: replicas per GPU, each asking `num_gpus: 1/workers_per_device`.",
    )

    @field_validator("ids")
    @classmethod
    def _ids_non_negative(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("a count of devices must be at least 1")
        if isinstance(v, list):
            if not v:
                raise ValueError("the list of device ids must not be empty")
            if any(i < 0 for i in v) or len(set(v)) != len(v):
                raise ValueError("device ids must be distinct and >= 0")
        return v


class BatchingSpec(Section):
    """`batching:`: how a model's requests are grouped into its workers' calls: the batch size, the
    wait for a batch to fill, continuous batching for text generation and pipelining."""

    max_batch_size: int = Field(
        16,
        ge=1,
        le=4096,
        description="Most items per `predict` call; text generation: most sequences running together.",
    )
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        le=10_000,
        description="Upper bound on the extra wait for a batch to fill. An idle worker takes queued work at once, "
        "so a lone request never waits; the bound only applies while other workers are busy. `0` never holds a "
        "batch.",
    )
    continuous: bool = Field(
        True,
        description="Text generation (transformers `text-generation`, a handler's `complete`): requests join the "
        "running batch between decoding steps and leave it when done; a worker takes new requests while it "
        "generates, up to max_batch_size running sequences. `false`: the static batcher (a batch runs until its "
        "longest row ends; new requests wait for it).",
    )
    max_batch_tokens: int = Field(
        2048,
        ge=1,
        description="Continuous batching: prompt tokens one step may prefill for joining requests (padded; the "
        "first joiner always fits), so a burst of long prompts does not stall running streams.",
    )
    pipeline: bool = Field(
        False,
        description="While a worker computes a batch, a full next batch may wait in its inbox (at most one), so a "
        "saturated worker never idles for the round trip through the API process. Measured (`python "
        "benchmarks/pipeline.py --runs 2 --duration 4 --concurrency 256`): +4% rps with a 1 ms model, +5% with a "
        "10 ms one; below saturation (c=64 against one worker) a full batch never queues behind and nothing "
        "changes. Sending partial batches early was tried and lost 14-29% (smaller batches). Never for streaming "
        "or continuous generation. Off by default: a batch waiting behind a crashed or hung one fails with it "
        "instead of going to the replacement.",
    )


class RateSpec(Section):
    """`limits.rate:`: token buckets per API key and model (a model's chat, completions and
    embeddings routes share its budget): requests, and prompt plus completion tokens, per minute.
    Past either, 429 with `Retry-After` (seconds until it would pass) in the route's error shape
    (OpenAI's `rate_limit_exceeded` under `/v1/`); every answer of a limited route carries OpenAI's
    `x-ratelimit-*` headers. auth.keys entries may set their own limits."""

    requests_per_minute: float | None = Field(
        None,
        gt=0,
        description="Requests per minute per key: a request takes one from its key's bucket, refilled at this "
        "rate; null: no limit.",
    )
    tokens_per_minute: float | None = Field(
        None,
        gt=0,
        description="Prompt plus completion tokens per minute per key, as the worker counted them, charged after "
        "each answer; so one long generation may take a key's budget below zero, and the key is refused until it "
        "refills. null: no limit.",
    )
    burst: int | None = Field(
        None, ge=1, description="Requests a key may make at once (its bucket's size); null: requests_per_minute."
    )
    backend: Literal["memory", "redis"] = Field(
        "memory",
        description="`memory`: counted in this process (not with server.api_processes > 1: each process would "
        "count on its own); `redis`: the buckets are shared by every servectl process using redis_url. Redis "
        "unreachable: nothing falls back to memory, requests go unlimited, a warning is logged at most every "
        "10 s and each failed call counts in `servectl_redis_errors_total`.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis: the server holding the counters.")

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


class LimitsSpec(Section):
    """`limits:`: what one model's requests may cost: the end-to-end deadline, the queue's length,
    the body's size, the drain on shutdown, and rate limits per API key."""

    timeout_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="End-to-end deadline, counted from the request's start: reading its body counts (a body still "
        "arriving at the deadline gets 504, its connection is closed and nothing reaches a worker). Late requests "
        "get 504, queued or running; queued work is dropped, running work is cancelled (a generation stops at its "
        "next step, streamed yet or not), a running batch's late result is discarded.",
    )
    max_queue: int = Field(
        1024,
        ge=1,
        description="Requests waiting for a worker; beyond it new requests get 503 with `Retry-After: 1` at once.",
    )
    max_body_mb: float = Field(
        16.0,
        gt=0,
        le=4096,
        description="Request body limit in MiB: larger bodies get 413, before the body is read when "
        "`Content-Length` says so, else as soon as the limit is passed. A body sent with `Content-Encoding: gzip` "
        "or `deflate` (tritonclient's `request_compression_algorithm`) is inflated as it arrives on every model "
        'route and its inflated size counts: a "zip bomb" gets its 413 after no more than the limit was '
        "inflated. A body that does not inflate gets 400 naming the coding; any other coding (`br`, `zstd`...) "
        "415 naming it.",
    )
    drain_s: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM or SIGINT: how long in-flight requests may take to finish. What is still open then "
        "gets a JSON 503 `shutting_down` with `Retry-After` (a stream: a final error event), logged and counted in "
        '`servectl_requests_dropped_total{reason="shutting_down"}`.',
    )
    rate: RateSpec = Field(
        RateSpec(),
        description="Rate limits per API key and model: token buckets of requests and tokens per minute, 429 past "
        "either (auth.keys entries may set their own); default: none.",
    )


class CacheSpec(Section):
    """`cache:`: answers of identical requests (same model, route and JSON body, keys in any
    order), served without a worker. Only deterministic answers: whole 200 answers (not streams,
    not errors); OpenAI chat or completions only with `temperature: 0` or a `seed`. Identical
    requests that arrive together are computed once. `Cache-Control: no-cache` from a client
    recomputes (and refreshes the entry); every cacheable answer says `X-Cache: hit` or `miss`.
    Entries are keyed by a digest of the model's spec, so a reload that changes the model never
    answers from the old one."""

    backend: Literal["off", "memory", "redis"] = Field(
        "off",
        description="`off`; `memory`: kept in this process; `redis`: shared by every servectl process using "
        "redis_url (replicas behind one Service, say). Redis unreachable: nothing falls back to memory, requests "
        "are computed uncached, a warning is logged at most every 10 s and each failed call counts in "
        "`servectl_redis_errors_total`.",
    )
    ttl_s: float = Field(300.0, gt=0, description="How long an answer is reused, in seconds.")
    max_entries: int = Field(10_000, ge=1, description="memory: answers kept (least recently used go first).")
    max_memory_mb: float = Field(
        256.0, gt=0, description="memory: the answers' size kept at most, in MiB (least recently used go first)."
    )
    max_entry_kb: int = Field(1024, ge=1, description="Answers larger than this many KiB are not cached.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis: the server holding the answers.")


class ScalingSpec(Section):
    """`scaling:`: autoscaling of a model's replicas: Ray Serve's `autoscaling_config` with
    `runtime.kind: ray`, and the HorizontalPodAutoscaler that `export k8s` writes."""

    min_replicas: int = Field(
        1,
        ge=0,
        description="Fewest replicas (at most max_replicas); Ray's `min_replicas`. 0 lets Ray Serve scale to zero "
        "(Kubernetes keeps at least 1 pod).",
    )
    max_replicas: int = Field(1, ge=1, description="Most replicas; Ray's `max_replicas`, the autoscaler's ceiling.")
    target_ongoing_requests: float = Field(
        2.0,
        gt=0,
        description="Requests per replica the autoscaler aims at (Ray's `target_ongoing_requests`; on Kubernetes, "
        "the waiting requests per pod).",
    )
    upscale_delay_s: float = Field(
        30.0,
        ge=0,
        description="How long load must call for more replicas before they are added (Ray's `upscale_delay_s`, the "
        "HPA's scale-up stabilization window).",
    )
    downscale_delay_s: float = Field(
        600.0,
        ge=0,
        description="How long load must call for fewer replicas before they are removed (Ray's "
        "`downscale_delay_s`, the HPA's scale-down stabilization window).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("scaling.min_replicas must not exceed scaling.max_replicas")
        return self


class SupervisorSpec(Section):
    """`supervisor:`: how a model's worker processes are watched: restarts after a crash or a hang
    (and when to give up), the deadline for setup, and the hang watchdog."""

    max_restarts: int = Field(
        5,
        ge=0,
        description="Restarts of one worker slot within restart_window_s (after a back-off of 0.1 s doubling to "
        "5 s); past that the slot is given up and `/ready` says why. A given-up slot is tried once more after "
        "restart_window_s (half-open: if that worker fails before it has served a batch, the slot gives up "
        "again). While every slot is given up, requests get 503 `unavailable` and `/health` answers 503, so a "
        "liveness probe restarts the pod.",
    )
    restart_window_s: float = Field(
        60.0,
        gt=0,
        description="Window for counting a slot's restarts (max_restarts), in seconds; a given-up slot is tried "
        "again after it.",
    )
    setup_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A worker still in `setup` after this long is ended and counted as a failed setup.",
    )
    hang_grace_s: float = Field(
        10.0,
        gt=0,
        description="The hang watchdog: a batch (or stream) still running this long after the deadline of its "
        "newest request means the worker is hung. It is killed with its process group and restarted; requests it "
        "still held get 503 `worker_hung` with `Retry-After`; `/ready` names the problem until the new worker is "
        'up; `servectl_worker_restarts_total{reason="hung"}` counts it.',
    )
