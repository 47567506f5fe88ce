"""`api.kind: predict`: JSON in, JSON out on `api.path`, the handler's own schemas, servectl's
error shape. Every deployment serves this route; the other protocols add theirs."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar

from servectl.outcome import Failure
from servectl.protocols.base import ApiProtocol, ModelRoute
from servectl.protocols.predict.errors import SCHEMA, failure_body
from servectl.spec import Spec


class PredictProtocol(ApiProtocol):
    kind = "predict"
    error_schema_name = "Error"
    error_schema: ClassVar[dict[str, Any]] = SCHEMA

    def model_routes(self, spec: Spec, served: Collection[str] | None = None) -> list[ModelRoute]:
        return [ModelRoute("predict", spec.api.path, "predict", f"Run {spec.name}")]

    def error_body(self, failure: Failure, request_id: str) -> bytes:
        return failure_body(failure, request_id)


PROTOCOL = PredictProtocol()
