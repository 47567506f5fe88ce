"""`auth:`: API keys (shared, named, a model's own, admin), read so a missing secret never
opens the API."""

from __future__ import annotations

from typing import Any

from pydantic import (
    Field,
    field_validator,
)

from servectl.spec.base import NAME_PATTERN, Section


class NamedKey(Section):
    """An API key with a name (what /stats and logs show, never the key) and its own limits."""

    key: str = Field(
        min_length=1,
        description="The secret key (not empty; each listed once), sent as `Authorization: Bearer KEY` or "
        "`X-API-Key: KEY`; never logged nor shown.",
    )
    name: str = Field(
        pattern=NAME_PATTERN,
        description="The key's name (letters, digits, `_.-`, distinct): what `/stats` (to that key itself and to "
        "admin keys), logs and auth.key_name_metrics show instead of the key.",
    )
    requests_per_minute: float | None = Field(
        None, gt=0, description="This key's requests per minute; null: limits.rate.requests_per_minute."
    )
    tokens_per_minute: float | None = Field(
        None,
        gt=0,
        description="This key's prompt plus completion tokens per minute; null: limits.rate.tokens_per_minute.",
    )
    burst: int | None = Field(None, ge=1, description="Requests this key may make at once; null: limits.rate.burst.")


class AuthSpec(Section):
    """`auth:`: the API keys a server accepts (shared, named with their own limits, admin) and what
    they protect; shared by every model (an entry of `models:` may add keys of its own). Read so a
    missing secret never opens the API: only null turns auth off."""

    api_keys: list[str] | None = Field(
        None,
        description="A list, or one comma-separated string. While any key exists anywhere in the spec "
        "(auth.api_keys, auth.keys, a model's own auth.api_keys, auth.admin_keys), every route but the probes "
        "(`/health`, `/ready`, `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}/ready`) needs "
        "`Authorization: Bearer KEY` or `X-API-Key: KEY` (else 401 with `WWW-Authenticate`); a model route needs "
        "one of the keys that open that model (a model with neither shared keys nor keys of its own stays open). "
        "These keys open every model and every shared route; `/stats` calls them `api_keys.0`, `api_keys.1`... "
        "Keys are compared in constant time and never logged nor shown in `/info`. Only null (or no key at all) "
        'turns auth off: a value that resolves to no keys (`""`, `","`, `[]`, or '
        "`${oc.env:SERVECTL_API_KEYS}` with the variable set but empty), or a list holding an empty key, is an "
        "error of `validate` and `serve` naming auth.api_keys and its line. `${oc.env:SERVECTL_API_KEYS,null}` "
        "means off while the variable is unset.",
    )
    admin_keys: list[str] | None = Field(
        None,
        description="Keys for the admin routes (`POST /admin/models/{name}/reload`), given as api_keys are (a list, "
        "or one comma-separated string); API keys never open them. Admin keys open no model route; beside the "
        "admin routes they open the shared ones (`/stats` with every key's usage, `/info`, `/metrics`, the docs). "
        "null: admin routes are off (403; 401 to a caller without a valid key) and not in the OpenAPI document.",
    )
    keys: list[NamedKey] | None = Field(
        None,
        description="Named keys beside api_keys: `[{key, name, requests_per_minute, tokens_per_minute, burst}]` "
        "(names and keys distinct); the name (never the key) is what `/stats` shows (to that key itself and to "
        "admin keys), the limits override limits.rate for that key.",
    )
    protect_docs: bool | None = Field(
        None,
        description="null (the default) or true: while any key exists (api_keys, keys, a model's own, "
        "admin_keys), `/docs`, `/redoc` and `/openapi.json` need one. false: open to anyone. (The default used to "
        "be false: the docs were open.)",
    )
    protect_metrics: bool | None = Field(
        None,
        description="null (the default) or true: while any key exists, `/metrics` and `/info` need one, and show a "
        "model's own key its models only. false: open to anyone, e.g. for a Prometheus scraper without a key "
        "(`export k8s` adds `prometheus.io/*` annotations). `/stats` needs a key whenever any key exists, whatever "
        "this says: it shows a key its own usage, admin keys every key's. (The default used to be false, which "
        "also opened `/stats`.)",
    )
    key_name_metrics: bool = Field(
        False,
        description="Count each key's model answers and tokens in `/metrics` under its name: "
        "`servectl_key_requests_total{model,key,status}`, `servectl_key_tokens_total{model,key,kind}`. Off: key "
        "names (tenants) never reach a metrics label. A key other than an admin key sees its own name's samples "
        "only.",
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


class ModelAuthSpec(Section):
    """A model entry's own `auth:`: keys accepted on its routes only (beside the shared ones)."""

    api_keys: list[str] | None = Field(
        None,
        description="With several models: keys this model accepts on its routes only, beside auth.api_keys (a list, "
        "or one comma-separated string; null: none of its own). A model with keys of its own is protected even "
        "while auth.api_keys is null. Such a key also opens the shared routes, scoped to its models: `/v1/models` "
        "lists them, `/info`, `/stats` and `/metrics` show theirs only, another model's V2 metadata and "
        "statistics are 401, and a protocol's shared routes (`/v1/models`, `/v2`) are 401 to a key that opens "
        "none of its models. `/stats` names it `MODEL.api_keys.N`. The rest of auth is shared and set at the top "
        "level only.",
    )

    _split = field_validator("api_keys", mode="before")(lambda v: split_keys(v, "add no keys of its own"))
    _not_blank = field_validator("api_keys")(lambda v: keys_not_blank(v))
