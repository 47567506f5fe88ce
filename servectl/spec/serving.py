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
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"
    ids: Literal["auto"] | int | list[int] = Field(
        "auto", description="`auto`: every visible GPU; N: the first N; [a, b]: those ids."
    )
    workers_per_device: int = Field(1, ge=1, le=64)

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
    max_batch_size: int = Field(16, ge=1, le=4096, description="Items per predict call.")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="Upper bound on the extra wait for a batch to fill.")
    continuous: bool = Field(
        True,
        description="Text generation: requests join the running batch between decoding steps and leave it when "
        "done (max_batch_size caps running sequences); false: a batch runs until its longest row ends.",
    )
    max_batch_tokens: int = Field(
        2048, ge=1, description="Continuous batching: prompt tokens one step may prefill for joining requests."
    )
    pipeline: bool = Field(
        False,
        description="While a worker computes a batch, a full next one may wait in its inbox (at most one), so a "
        "saturated worker never idles for the round trip through the API process (+4-5% rps measured at c=256; "
        "nothing below saturation). Never for streaming or continuous generation. Off by default: a batch "
        "waiting behind a crashed or hung one fails with it instead of going to the replacement.",
    )


class RateSpec(Section):
    """Token buckets per API key (per model): requests and generated tokens per minute. Past
    either, 429 with Retry-After; answers of a limited route carry OpenAI's x-ratelimit-* headers."""

    requests_per_minute: float | None = Field(None, gt=0, description="Requests per minute per key; null: no limit.")
    tokens_per_minute: float | None = Field(
        None,
        gt=0,
        description="Prompt plus completion tokens per minute per key, charged after each answer; a key whose "
        "budget is spent (below zero) is refused until it refills. null: no limit.",
    )
    burst: int | None = Field(None, ge=1, description="Requests a key may make at once; null: requests_per_minute.")
    backend: Literal["memory", "redis"] = Field(
        "memory", description="`memory`: counted in this process; `redis`: shared by every process using redis_url."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis: the server holding the counters.")

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


class LimitsSpec(Section):
    timeout_s: float = Field(30.0, gt=0, le=86_400, description="End-to-end deadline; then 504.")
    max_queue: int = Field(1024, ge=1, description="Requests waiting for a worker; beyond, 503.")
    max_body_mb: float = Field(16.0, gt=0, le=4096, description="Request body limit; beyond, 413.")
    drain_s: float = Field(30.0, ge=0, description="Grace period for in-flight work on SIGTERM.")
    rate: RateSpec = Field(
        RateSpec(), description="Rate limits per API key (auth.keys entries may set their own); default: none."
    )


class CacheSpec(Section):
    """Answers of identical requests (same model, route and canonical JSON body), served
    without a worker. Only deterministic answers: not streamed; OpenAI generation only with
    temperature 0 or a seed. `Cache-Control: no-cache` from a client recomputes."""

    backend: Literal["off", "memory", "redis"] = Field(
        "off", description="`memory`: this process; `redis`: shared by every process using redis_url; `off`."
    )
    ttl_s: float = Field(300.0, gt=0, description="How long an answer is reused.")
    max_entries: int = Field(10_000, ge=1, description="memory: answers kept (least recently used go first).")
    max_memory_mb: float = Field(
        256.0, gt=0, description="memory: the answers' bytes kept at most (least recently used go first)."
    )
    max_entry_kb: int = Field(1024, ge=1, description="Answers larger than this are not cached.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis: the server holding the answers.")


class ScalingSpec(Section):
    """Autoscaling of a model's replicas (runtime.kind: ray; Kubernetes' HPA from `export k8s`)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0, description="Requests per replica the autoscaler aims at.")
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("scaling.min_replicas must not exceed scaling.max_replicas")
        return self


class SupervisorSpec(Section):
    max_restarts: int = Field(
        5, ge=0, description="Restarts of one worker slot within restart_window_s before giving up."
    )
    restart_window_s: float = Field(60.0, gt=0)
    setup_timeout_s: float = Field(600.0, gt=0, description="Longest a worker may spend in setup.")
    hang_grace_s: float = Field(
        10.0,
        gt=0,
        description="A batch still running this long after its newest request's deadline: the worker is hung "
        "and is replaced.",
    )
