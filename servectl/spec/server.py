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
    """`api:`: how a model is called over HTTP: its route, the protocol it speaks (plain JSON,
    OpenAI-compatible, the Open Inference Protocol) and streaming."""

    kind: Literal["predict", "openai", "v2"] = Field(
        "predict",
        description="`predict`: JSON in, JSON out on api.path. `openai`: also the OpenAI-compatible routes (a "
        "handler with complete/embed hooks, or transformers `text-generation` / `feature-extraction`). `v2`: also "
        "the Open Inference Protocol routes (tensor models: `onnx` or `pytorch`). See the guide.",
    )
    path: str = Field(
        "/predict",
        pattern=r"^/[A-Za-z0-9_\-/.]*$",
        description="Path of the model route (`/` then letters, digits, `_-/.`). With several models the default is "
        "`/models/{name}/predict` (`/predict` with one); each model needs its own.",
    )
    stream: bool = Field(
        False,
        description="Stream a generator handler's chunks (see the guide). Off: a generator handler's chunks are "
        "answered as one JSON list.",
    )
    stream_format: Literal["ndjson", "sse"] = Field(
        "ndjson",
        description="Default stream format: `ndjson` (`application/x-ndjson`, one JSON value per line) or `sse` "
        "(`text/event-stream`); a client's `Accept` header picks either.",
    )


class TracingSpec(Section):
    """`server.tracing:`: OpenTelemetry traces (the `otel` extra): a span per request, children
    for its queue wait and its time in a worker; a client's W3C `traceparent` is honoured."""

    otlp_endpoint: str | None = Field(
        None,
        description="OpenTelemetry traces over OTLP/HTTP (`pip install 'servectl[otel]'`), e.g. "
        "`http://127.0.0.1:4318/v1/traces`: a span per request (method and path, status, request id, model) with "
        "children `queue` (waiting for a worker) and `worker` (from the worker taking it to its answer), the "
        "latter with children `decode`, `predict` and `encode` (its batch's time in each stage, as the worker "
        "measured it and sent back with the results); a client's W3C `traceparent` makes it a child of the "
        "client's span. null: off (nothing imported).",
    )
    sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded; a sampled or unsampled parent decides for its children.",
    )
    service_name: str = Field("servectl", description="The `service.name` resource attribute of the spans.")


API_PROCESSES_ON_RAY = (
    "more than 1 needs runtime.kind 'local' (with Ray, the HTTP side scales with Ray Serve's proxies)"
)


def _field_error(loc: tuple[str, ...], message: str) -> ValidationError:
    """An error of a check across sections, named by the field (and so its line) it is about."""
    error = InitErrorDetails(type=PydanticCustomError("spec", message), loc=loc, input=None)
    return ValidationError.from_exception_data("Spec", [error])


class ServerSpec(Section):
    """`server:`: the HTTP server, one per deployment and shared by every model: where it listens,
    its logs, what it allows clients (headers, connections, timeouts), compression, front-end
    processes and tracing."""

    host: str = Field("127.0.0.1", description="Address to listen on (`0.0.0.0` or `::` for every interface).")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level: `debug`, `info`, `warning` or `error`."
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text` or `json` (one object per line), for the API process and the workers alike. With "
        "`json`, stderr holds JSON lines only: servectl's and uvicorn's logs, the access log, Python `warnings`, "
        'and a start-up line `{"message": "serving NAME at URL", "summary": {...}}`; the start-up table '
        "goes to stdout, and only at a terminal; progress bars are off for the server and its workers "
        "(`HF_HUB_DISABLE_PROGRESS_BARS=1`, `TQDM_DISABLE=1` unless set). What native code or a handler writes "
        "straight to fd 2 cannot be caught. In `text`, control characters are escaped and further lines of a "
        "message (tracebacks) are indented by 4 spaces, so every line starting at column 0 is a real entry.",
    )
    access_log: bool = Field(
        True,
        description="One log line per request: method, path, status, ms, request id. Buffered: lines are written "
        "in batches at most 100 ms after their request and at shutdown (a SIGTERM loses none; they may appear up "
        "to 100 ms after other lines of the same moment); it costs about 4% of throughput at c=64. Control "
        "characters in the method and path (`%0a`, `%1b`) are written as `\\x0a`, `\\x1b`.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; empty: CORS off.")
    max_header_kb: int = Field(
        64,
        ge=1,
        le=16_384,
        description="The request line plus headers, in KiB. A longer head gets 431 `headers_too_large` and the "
        "connection is closed, before auth and before any route; servectl stops reading at the cap, so a huge "
        "header costs no memory.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open client connections. Beyond it a new connection gets 503 `overloaded` with "
        "`Retry-After: 1` at once and is closed. At start-up servectl raises its open-file soft limit to the hard "
        "limit, and warns if max_connections plus about 64 descriptors still does not fit (raise `ulimit -n` or "
        "lower this).",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="How long a client may take to send a request's line and headers, from the connection's open "
        "(or from the first byte of the next request on a kept-alive connection). Then: 408 `request_timeout` if "
        "part of a request came, else the connection is closed. The same limit applies to the rest of a body "
        "already answered (e.g. after a 413 or 415).",
    )
    keep_alive_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="An idle kept-alive connection is closed after this many seconds (fractions allowed).",
    )
    gzip_min_bytes: int | None = Field(
        64 * 1024,
        ge=0,
        description="A model route's answer of at least this many bytes is compressed for a client whose "
        "`Accept-Encoding` takes gzip (else deflate), with `Content-Encoding` and `Vary: Accept-Encoding`; `0`: "
        "every answer; null: never. zlib's fastest level, in the API process (off the event loop from 1 MiB). "
        "Streams (NDJSON, SSE) and errors are never compressed.",
    )
    api_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="HTTP front-end processes on the one port (SO_REUSEPORT: the kernel spreads new connections "
        "over them), each reaching every worker; at most 64. Raise it when the API process's CPU limits "
        "throughput (many cores, a fast model). `runtime.kind: local` only; with limits.rate or auth.keys limits "
        "it needs limits.rate.backend `redis`.",
    )
    tracing: TracingSpec = TracingSpec()


class RuntimeSpec(Section):
    """`runtime:`: where the models' workers run, shared by every model: worker processes on this
    machine, or Ray Serve replicas (the `ray` extra) behind servectl's own front end."""

    kind: Literal["local", "ray"] = Field(
        "local",
        description="`local`: worker processes on this machine; `ray`: Ray Serve deployments (`pip install "
        "'servectl[ray]'`). `servectl serve spec.yaml runtime.kind=ray` works as an override.",
    )
    address: str | None = Field(
        None,
        description="ray: null starts a Ray instance for this server (node IP 127.0.0.1, no dashboard); `auto` "
        "joins this node's cluster; `ray://host:10001` a remote cluster (the handler and model files must be at "
        "the same paths there, or in the job's `runtime_env`).",
    )
    num_cpus: int | None = Field(None, ge=1, description="ray, for a Ray it starts: the CPUs it may use (null: all).")
    namespace: str = Field("servectl", min_length=1, description="ray: the Ray namespace of the deployments.")
