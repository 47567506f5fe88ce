"""The deployment spec's typed schema: `Spec`, one model with the server, auth and runtime
it is served with, the sections everything reads. Loading it from YAML (positions,
interpolation, overrides, errors naming file, line, column and field) is `loading.py`;
several models in one deployment: `deployment.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    PrivateAttr,
    model_validator,
)

from servectl.spec.base import NAME_PATTERN, Section
from servectl.spec.keys import AuthSpec
from servectl.spec.model import ModelSpec
from servectl.spec.server import API_PROCESSES_ON_RAY, ApiSpec, RuntimeSpec, ServerSpec, _field_error
from servectl.spec.serving import BatchingSpec, CacheSpec, DevicesSpec, LimitsSpec, ScalingSpec, SupervisorSpec


class Spec(Section):
    """One model as served: what a single-model spec file holds, or one entry of `models:`
    with the deployment's shared sections (`server`, `auth`)."""

    name: str = Field(
        "servectl",
        pattern=NAME_PATTERN,
        description="The model's (a single-model spec: the deployment's) name: letters, digits, `_.-`, starting "
        "with a letter or digit, at most 64 characters; shown in `/info` and the docs title. With several models "
        "each needs its own: it names the model in `/models/{name}/predict` (the default api.path), OpenAI's "
        "`model` field, V2 routes, metrics' `model` label and overrides (`models.NAME.key=value`).",
    )
    model: ModelSpec = ModelSpec()
    handler: str | None = Field(
        None,
        description="`handlers/foo.py`, `handlers.foo`, or `handlers.foo:Foo` (a class is instantiated with no "
        "arguments). Looked up from the spec file's folder, then the working directory, then the spec folder's "
        "parent. Required with model.backend `python`.",
    )
    devices: DevicesSpec = DevicesSpec()
    batching: BatchingSpec = BatchingSpec()
    limits: LimitsSpec = LimitsSpec()
    auth: AuthSpec = AuthSpec()
    api: ApiSpec = ApiSpec()
    server: ServerSpec = ServerSpec()
    supervisor: SupervisorSpec = SupervisorSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    cache: CacheSpec = Field(
        CacheSpec(),
        description="The response cache: answers of identical requests (same model, route and JSON body) reused "
        "without a worker, deterministic ones only; default: off.",
    )
    scaling: ScalingSpec | None = Field(
        None,
        description="Autoscaling of the model's replicas (runtime.kind: ray, where it is Ray's "
        "`autoscaling_config`, and Kubernetes' HPA from `export k8s`); null: a fixed count of replicas, as "
        "`devices` plans.",
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
