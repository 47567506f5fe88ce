"""Where a client's OpenAPI document comes from: a spec, built in-process, or a server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from servectl.spec import DeploymentSpec, Spec


class ClientGenError(Exception):
    """A client cannot be generated; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """An OpenAPI document and what it came from (named in the generated file's header)."""

    schema: dict[str, Any]
    origin: str  # "spec configs/x.yaml" or "http://host:port/openapi.json"


def from_spec(spec: Spec | DeploymentSpec, shown_as: str) -> Source:
    """Build the app as `serve` would, without workers: each handler is imported to read its
    types, but nothing is set up, so no model is loaded."""
    from servectl.processes.deployment import Deployment
    from servectl.protocols import build_adapters, describe
    from servectl.runners import build_handler
    from servectl.server.app import build_app

    deployment_spec = spec if isinstance(spec, DeploymentSpec) else DeploymentSpec.of(spec)
    deployment = Deployment(deployment_spec, plan=lambda _spec: ([], "none: client-gen"))
    for model in deployment.models.values():
        handler = build_handler(model.spec)
        model.handler_info = describe(handler, build_adapters(model.spec, handler))
    return Source(build_app(deployment).openapi(), f"spec {shown_as}")


def from_url(url: str, api_key: str | None, timeout_s: float = 10.0) -> Source:
    """`GET {url}/openapi.json` of a running server (the key sent when given)."""
    address = url.rstrip("/")
    if not address.endswith("/openapi.json"):
        address += "/openapi.json"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(address, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ClientGenError(f"cannot read {address}: {exc}") from None
    if response.status_code == 401:
        raise ClientGenError(f"{address} needs an API key: pass --api-key or set SERVECTL_API_KEY")
    if response.status_code != 200:
        raise ClientGenError(f"{address} answered {response.status_code}: {response.text[:200]}")
    try:
        schema = response.json()
    except ValueError:
        raise ClientGenError(f"{address} did not answer JSON") from None
    meta = schema.get("x-servectl") if isinstance(schema, dict) else None
    if not isinstance(meta, dict):
        raise ClientGenError(f"{address} is not a servectl server's OpenAPI document (no x-servectl)")
    if not meta.get("complete"):
        raise ClientGenError(
            f"{address}: the server's workers have not reported their schemas yet (GET /ready is 503); "
            "try again once it is ready"
        )
    return Source(schema, address)
