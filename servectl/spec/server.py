"""`api`, `server` (with `tracing`) and `runtime`: the HTTP side and where workers run."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    ValidationError,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from servectl.spec.base import Section


class ApiSpec(Section):
    kind: Literal["predict", "openai", "v2"] = Field(
        "predict",
        description="`predict`: JSON in, JSON out; `openai`: also OpenAI-compatible routes; `v2`: also V2 routes.",
    )
    path: str = Field("/predict", pattern=r"^/[A-Za-z0-9_\-/.]*$")
    stream: bool = Field(False, description="Stream a generator handler's chunks (else they are sent as one list).")
    stream_format: Literal["ndjson", "sse"] = Field(
        "ndjson", description="Default stream format; a client's Accept header can pick the other."
    )


class TracingSpec(Section):
    """OpenTelemetry traces (the `otel` extra): a span per request, children for its queue wait
    and its time in a worker; a client's W3C `traceparent` is honoured."""

    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; null: tracing off."
    )
    sample_ratio: float = Field(1.0, ge=0, le=1, description="Share of new traces recorded (a parent's choice wins).")
    service_name: str = Field("servectl", description="The service.name resource attribute.")


API_PROCESSES_ON_RAY = (
    "more than 1 needs runtime.kind 'local' (with Ray, the HTTP side scales with Ray Serve's proxies)"
)


def _field_error(loc: tuple[str, ...], message: str) -> ValidationError:
    """An error of a check across sections, named by the field (and so its line) it is about."""
    error = InitErrorDetails(type=PydanticCustomError("spec", message), loc=loc, input=None)
    return ValidationError.from_exception_data("Spec", [error])


class ServerSpec(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    access_log: bool = Field(True, description="One log line per request.")
    cors_origins: list[str] = Field(default_factory=list, description="Empty: CORS off.")
    max_header_kb: int = Field(
        64, ge=1, le=16_384, description="Request line plus headers, in KiB; beyond, 431 before auth."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open client connections; beyond, new ones get a fast 503 with Retry-After."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="Longest a client may take to send a request's line and headers."
    )
    keep_alive_s: float = Field(5.0, gt=0, le=3600, description="Idle keep-alive connections are closed after this.")
    gzip_min_bytes: int | None = Field(
        64 * 1024,
        ge=0,
        description="A model's answer of at least this many bytes is compressed (gzip, else deflate) for a client "
        "whose Accept-Encoding takes it; 0: every answer; null: never. Streams are never compressed.",
    )
    api_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="HTTP front-end processes sharing the port (SO_REUSEPORT), each reaching every worker; "
        "more than 1 when one process's CPU limits throughput on a many-core host.",
    )
    tracing: TracingSpec = TracingSpec()


class RuntimeSpec(Section):
    """Where the models' workers run: worker processes on this machine, or Ray Serve replicas."""

    kind: Literal["local", "ray"] = Field(
        "local", description="`local`: worker processes on this machine; `ray`: Ray Serve deployments."
    )
    address: str | None = Field(
        None,
        description="ray: null starts a Ray instance for this server; `auto` joins this node's cluster; "
        "`ray://host:10001` a remote one.",
    )
    num_cpus: int | None = Field(None, ge=1, description="ray, a Ray it starts: the CPUs it may use (null: all).")
    namespace: str = Field("servectl", min_length=1, description="ray: the namespace of the deployments.")
