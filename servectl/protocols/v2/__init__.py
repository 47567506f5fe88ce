"""`api.kind: v2`: the Open Inference Protocol (Triton, KServe) for tensor models: infer,
server and model metadata, health and readiness, the served version's routes
(`/v2/models/{m}/versions/1/...`), Triton's statistics, and errors as `{"error": "message"}`
everywhere under `/v2/` (401, 404 and 405 included)."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from servectl.outcome import Failure
from servectl.protocols.base import ApiProtocol, ModelRoute
from servectl.spec import Spec

if TYPE_CHECKING:
    from fastapi import FastAPI

    from servectl.handler import Handler
    from servectl.runtime.base import ServedModels

from servectl.protocols.v2.version import VERSION

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


class V2Protocol(ApiProtocol):
    kind = "v2"
    error_schema_name = "V2Error"
    error_schema: ClassVar[dict[str, Any]] = SCHEMA
    open_paths = frozenset({"/v2/health/live", "/v2/health/ready"})
    fixed_paths = frozenset({"/v2", "/v2/", "/v2/health/live", "/v2/health/ready", "/v2/models/stats"})
    path_prefix = "/v2/"
    framing_header = b"inference-header-content-length"

    def model_routes(self, spec: Spec, served: Collection[str] | None = None) -> list[ModelRoute]:
        base = f"/v2/models/{spec.name}"
        return [
            ModelRoute("v2", f"{base}/infer", "infer", f"V2 inference on {spec.name}", self.kind),
            ModelRoute(
                "v2",
                f"{base}/versions/{VERSION}/infer",
                "infer_version",
                f"V2 inference on {spec.name}, version {VERSION} (the served one)",
                self.kind,
                documented=False,  # Triton clients' alias of the unversioned route
            ),
        ]

    def model_paths(self, spec: Spec) -> frozenset[str]:
        base = f"/v2/models/{spec.name}"
        own = (base, f"{base}/ready", f"{base}/stats")
        return frozenset(own) | {p.replace(base, f"{base}/versions/{VERSION}", 1) for p in own}

    def adapters(self, spec: Spec, handler: Handler) -> dict[str, Any]:
        from servectl.protocols.v2.adapter import V2Adapter  # numpy: only tensor deployments need it

        return {"v2": V2Adapter(handler.runner or handler.obj, spec.name)}

    def add_routes(self, app: FastAPI, deployment: ServedModels) -> None:
        from servectl.protocols.v2.routes import add_v2_routes

        add_v2_routes(app, deployment)

    def error_body(self, failure: Failure, request_id: str) -> bytes:
        return orjson.dumps({"error": failure.message, "request_id": request_id})


PROTOCOL = V2Protocol()
