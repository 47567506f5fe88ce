"""The deployment spec's typed schema: the sections everything reads.

Everything else in servectl reads a `Spec` (one model, with the server, auth and runtime
it is served with). Loading it from YAML (positions, interpolation, overrides, errors
naming file, line, column and field) is `spec_loading.py`; several models in one
deployment: `deployment_spec.py`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal, get_args

from omegaconf import OmegaConf
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from servectl.spec_issues import SpecError as SpecError  # re-exported: everything imports them from here
from servectl.spec_issues import SpecIssue as SpecIssue

DEFAULT_SPEC = Path(__file__).parent / "examples" / "quickstart.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
SHARED_SECTIONS = ("server", "auth", "runtime")  # one per server: shared by every model of a deployment


def _package_path(package: str, *parts: str) -> str:
    """`${pkg:name,sub,dir}`: a path inside an installed package, found without importing it."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return str(Path(next(iter(found.submodule_search_locations)), *parts))


if not OmegaConf.has_resolver("pkg"):
    OmegaConf.register_resolver("pkg", _package_path)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """`true` where a number is asked for is a mistake, not 1 (pydantic's lax mode takes it)."""
        if isinstance(value, bool) and info.field_name is not None:
            kinds = set(get_args(cls.model_fields[info.field_name].annotation)) or {
                cls.model_fields[info.field_name].annotation
            }
            if bool not in kinds and kinds & {int, float}:
                raise PydanticCustomError("number_type", "Input should be a number, not true or false")
        return value


class OnnxOptions(_Section):
    intra_op_threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads; null: its default.")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"


TASKS = ("feature-extraction", "text-classification", "text-generation")


class TensorDecl(_Section):
    """One tensor of a model, as the spec declares it: where the model file cannot say it
    (TorchScript, a factory), V2 metadata, shape checks and `convert` read it from here."""

    name: str = Field(min_length=1)
    shape: list[int] | None = Field(
        None, description="Dimensions with the batch axis first; -1 for a dynamic axis; null: unknown."
    )
    dtype: Literal["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"] | None = Field(
        None, description="null: the model's dtype (inputs), float32 (outputs)."
    )

    @field_validator("shape")
    @classmethod
    def _dims(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(d < -1 or d == 0 for d in v)):
            raise ValueError("a shape is a non-empty list of sizes >= 1, or -1 for a dynamic axis")
        return v


def _tensor_decls(v: Any) -> Any:
    """`[a, b]` is shorthand for `[{name: a}, {name: b}]`."""
    if isinstance(v, list):
        return [{"name": item} if isinstance(item, str) else item for item in v]
    return v


class ModelSpec(_Section):
    backend: Literal["python", "pytorch", "onnx", "transformers"] = Field(
        "python", description="`python`: the handler does the work; else a built-in runner."
    )
    path: str | None = Field(None, description="Model file or folder, relative to the spec file.")
    task: Literal["feature-extraction", "text-classification", "text-generation"] | None = Field(
        None, description="What a transformers model does."
    )
    factory: str | None = Field(None, description="pytorch: `module:function` returning an nn.Module.")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    compile: bool = Field(False, description="pytorch: torch.compile the model (warns and skips where unsupported).")
    inputs: list[TensorDecl] | None = Field(
        None,
        description="A tensor model's inputs in call order: names, or {name, shape, dtype} (shape with the batch "
        "axis first, -1 dynamic).",
    )
    outputs: list[TensorDecl] | None = Field(
        None,
        description="pytorch: the outputs' names (in return order), shapes and dtypes; null: learned from "
        "model.example.",
    )
    pad: float | None = Field(None, description="Pad value for variable-length inputs; null: never pad.")
    max_length: int | None = Field(
        None,
        ge=1,
        description="transformers: the context in tokens (inputs are truncated to it, a generation's prompt plus "
        "max_tokens must fit); null: the model's own limit.",
    )
    normalize: bool = Field(True, description="feature-extraction: L2-normalise embeddings.")
    top_k: int = Field(1, ge=1, description="text-classification: labels returned per input.")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="text-generation: default tokens to generate.")
    onnx: OnnxOptions = OnnxOptions()
    example: Any = Field(None, description="A sample request: shown in /docs, used by `validate --smoke`.")

    _decls = field_validator("inputs", "outputs", mode="before")(lambda v: _tensor_decls(v))

    @field_validator("inputs", "outputs")
    @classmethod
    def _distinct(cls, v: list[TensorDecl] | None) -> list[TensorDecl] | None:
        names = [d.name for d in v or []]
        if len(set(names)) != len(names):
            raise ValueError("tensor names must be distinct")
        return v

    @model_validator(mode="after")
    def _backend_fields(self) -> ModelSpec:
        if self.backend == "onnx" and not self.path:
            raise ValueError("backend 'onnx' needs model.path (an .onnx file)")
        if self.backend == "pytorch" and not (self.path or self.factory):
            raise ValueError("backend 'pytorch' needs model.path (TorchScript or .pt2) or model.factory")
        if self.backend == "transformers" and not (self.path and self.task):
            raise ValueError(f"backend 'transformers' needs model.path (a local folder) and model.task, one of {TASKS}")
        if self.outputs and self.backend != "pytorch":
            raise ValueError("model.outputs is for backend 'pytorch' (ONNX models name their own outputs)")
        if self.task and self.backend != "transformers":
            raise ValueError("model.task is for backend 'transformers'")
        return self


class DevicesSpec(_Section):
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


class BatchingSpec(_Section):
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


class RateSpec(_Section):
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


class LimitsSpec(_Section):
    timeout_s: float = Field(30.0, gt=0, le=86_400, description="End-to-end deadline; then 504.")
    max_queue: int = Field(1024, ge=1, description="Requests waiting for a worker; beyond, 503.")
    max_body_mb: float = Field(16.0, gt=0, le=4096, description="Request body limit; beyond, 413.")
    drain_s: float = Field(30.0, ge=0, description="Grace period for in-flight work on SIGTERM.")
    rate: RateSpec = Field(
        RateSpec(), description="Rate limits per API key (auth.keys entries may set their own); default: none."
    )


class CacheSpec(_Section):
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


class NamedKey(_Section):
    """An API key with a name (what /stats and logs show, never the key) and its own limits."""

    key: str = Field(min_length=1)
    name: str = Field(pattern=NAME_PATTERN)
    requests_per_minute: float | None = Field(None, gt=0, description="null: limits.rate.requests_per_minute.")
    tokens_per_minute: float | None = Field(None, gt=0, description="null: limits.rate.tokens_per_minute.")
    burst: int | None = Field(None, ge=1, description="null: limits.rate.burst.")


class AuthSpec(_Section):
    api_keys: list[str] | None = Field(
        None, description="Accepted keys: a list, or one comma-separated string; null: no auth."
    )
    admin_keys: list[str] | None = Field(
        None,
        description="Keys for /admin routes (reload): a list, or one comma-separated string; null: admin routes off. "
        "API keys never open them.",
    )
    keys: list[NamedKey] | None = Field(
        None, description="Named keys, beside api_keys: [{key, name, requests_per_minute, tokens_per_minute, burst}]."
    )
    protect_docs: bool | None = Field(
        None,
        description="null (default) or true: while any key exists (api_keys, keys, a model's own, admin_keys), "
        "/docs, /redoc and /openapi.json need one; false: open to anyone.",
    )
    protect_metrics: bool | None = Field(
        None,
        description="null (default) or true: while any key exists, /metrics and /info need one (each key sees its "
        "models' figures only); false: open to anyone (a Prometheus scraper without a key). /stats always needs a "
        "key while any key exists: it shows a key its own usage, admin keys every key's.",
    )
    key_name_metrics: bool = Field(
        False,
        description="Count each key's requests and tokens in /metrics under its name "
        "(servectl_key_requests_total, servectl_key_tokens_total, label `key`); off: key names never reach metrics.",
    )

    _split = field_validator("api_keys", "admin_keys", mode="before")(lambda v: split_keys(v, "turn auth off"))
    _not_blank = field_validator("api_keys", "admin_keys")(lambda v: keys_not_blank(v))

    @field_validator("keys")
    @classmethod
    def _distinct_keys(cls, v: list[NamedKey] | None) -> list[NamedKey] | None:
        if v is not None:
            if len({k.name for k in v}) != len(v):
                raise ValueError("auth.keys: names must be distinct")
            if len({k.key for k in v}) != len(v):
                raise ValueError("auth.keys: the same key is listed twice")
        return v

    def named_keys(self) -> dict[str, NamedKey]:
        """Every accepted API key by its value: named ones as given, plain api_keys as
        `api_keys[i]` (a name that never shows the key)."""
        named = {k.key: k for k in self.keys or []}
        for i, key in enumerate(self.api_keys or []):
            named.setdefault(key, NamedKey(key=key, name=f"api_keys.{i}"))
        return named


def split_keys(v: Any, null_means: str) -> Any:
    """Keys as a list (from one comma-separated string too). Keys that resolve to nothing ("",
    ",", []: say an empty ${oc.env:...}) fail closed: only null turns auth off, so a missing
    secret never opens the API."""
    if isinstance(v, str):
        v = [k for k in (part.strip() for part in v.split(",")) if k]
    if isinstance(v, list) and not v:
        raise ValueError(
            f"resolved to no keys (an empty string, only commas or an empty list): give at least one key, or null "
            f"to {null_means}"
        )
    return v


def keys_not_blank(v: list[str] | None) -> list[str] | None:
    if v is not None and any(not k.strip() for k in v):
        raise ValueError("API keys must not be empty strings")
    return v


class ModelAuthSpec(_Section):
    """A model entry's own `auth:`: keys accepted on its routes only (beside the shared ones)."""

    api_keys: list[str] | None = Field(
        None, description="Keys accepted on this model's routes only, beside auth.api_keys; null: none of its own."
    )

    _split = field_validator("api_keys", mode="before")(lambda v: split_keys(v, "add no keys of its own"))
    _not_blank = field_validator("api_keys")(lambda v: keys_not_blank(v))


class ApiSpec(_Section):
    kind: Literal["predict", "openai", "v2"] = Field(
        "predict",
        description="`predict`: JSON in, JSON out; `openai`: also OpenAI-compatible routes; `v2`: also V2 routes.",
    )
    path: str = Field("/predict", pattern=r"^/[A-Za-z0-9_\-/.]*$")
    stream: bool = Field(False, description="Stream a generator handler's chunks (else they are sent as one list).")
    stream_format: Literal["ndjson", "sse"] = Field(
        "ndjson", description="Default stream format; a client's Accept header can pick the other."
    )


class TracingSpec(_Section):
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


class ServerSpec(_Section):
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


class RuntimeSpec(_Section):
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


class ScalingSpec(_Section):
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


class SupervisorSpec(_Section):
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


class Spec(_Section):
    """One model as served: what a single-model spec file holds, or one entry of `models:`
    with the deployment's shared sections (`server`, `auth`)."""

    name: str = Field("servectl", pattern=NAME_PATTERN)
    model: ModelSpec = ModelSpec()
    handler: str | None = Field(None, description="`handlers/foo.py`, `handlers.foo` or `handlers.foo:Foo`.")
    devices: DevicesSpec = DevicesSpec()
    batching: BatchingSpec = BatchingSpec()
    limits: LimitsSpec = LimitsSpec()
    auth: AuthSpec = AuthSpec()
    api: ApiSpec = ApiSpec()
    server: ServerSpec = ServerSpec()
    supervisor: SupervisorSpec = SupervisorSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    cache: CacheSpec = Field(CacheSpec(), description="Answers of identical requests reused; default: off.")
    scaling: ScalingSpec | None = Field(
        None, description="Autoscaling (runtime.kind: ray, and Kubernetes); null: the replicas `devices` plans."
    )

    @model_validator(mode="after")
    def _handler_or_runner(self) -> Spec:
        if self.model.backend == "python" and not self.handler:
            raise ValueError("model.backend 'python' needs a handler (e.g. handlers/my_model.py)")
        if self.api.kind == "openai" and not (
            self.model.backend == "python" or self.model.task in ("text-generation", "feature-extraction")
        ):
            raise ValueError(
                "api.kind 'openai' serves a handler with complete/embed hooks (backend python), or transformers "
                "models with task text-generation (chat, completions) or feature-extraction (embeddings)"
            )
        if self.api.kind == "v2" and self.model.backend not in ("onnx", "pytorch"):
            raise ValueError("api.kind 'v2' serves tensor models: model.backend 'onnx' or 'pytorch'")
        if self.server.api_processes > 1 and self.runtime.kind == "ray":
            raise _field_error(("server", "api_processes"), API_PROCESSES_ON_RAY)
        keyed = any(k.requests_per_minute or k.tokens_per_minute for k in self.auth.keys or [])
        rate = self.limits.rate
        if self.server.api_processes > 1 and rate.backend == "memory" and (rate.limited or keyed):
            msg = (
                "memory counts in each API process, so with server.api_processes > 1 every key would get that "
                "many times its limit: use backend 'redis' (shared), or one API process"
            )
            raise _field_error(("limits", "rate", "backend"), msg)
        return self

    _source: str = PrivateAttr("<built-in>")
    _base_dir: str = PrivateAttr(".")
    _entry: str = PrivateAttr("")  # where its model keys are in its file: "" (top level) or "models.1"
    _own_keys: list[str] | None = PrivateAttr(None)  # its entry's auth.api_keys: accepted on its routes only

    @property
    def source(self) -> str:
        """The file this spec came from."""
        return self._source

    @property
    def base_dir(self) -> Path:
        """The spec file's folder: handler modules and model paths are found from here."""
        return Path(self._base_dir)

    @property
    def own_api_keys(self) -> list[str] | None:
        """Keys its entry adds for its routes only (`models[i].auth.api_keys`)."""
        return self._own_keys

    @property
    def entry(self) -> str:
        """Where this model's keys are in its file: `""` (the top level) or `models.N`."""
        return self._entry

    def model_path(self) -> Path | None:
        if self.model.path is None:
            return None
        p = Path(self.model.path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def public_dict(self) -> dict[str, Any]:
        """The resolved spec without secrets, for /info and `validate --print`."""
        data = self.model_dump(mode="json")
        keys = data["auth"].pop("api_keys")
        data["auth"]["api_keys"] = f"<{len(keys)} keys>" if keys else None
        named = data["auth"].pop("keys")
        data["auth"]["keys"] = [{**k, "key": "<hidden>"} for k in named] if named else None
        admin = data["auth"].pop("admin_keys")
        data["auth"]["admin_keys"] = f"<{len(admin)} keys>" if admin else None
        if self._own_keys:
            data["auth"]["own_api_keys"] = f"<{len(self._own_keys)} keys>"
        return data
