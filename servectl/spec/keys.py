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

    key: str = Field(min_length=1)
    name: str = Field(pattern=NAME_PATTERN)
    requests_per_minute: float | None = Field(None, gt=0, description="null: limits.rate.requests_per_minute.")
    tokens_per_minute: float | None = Field(None, gt=0, description="null: limits.rate.tokens_per_minute.")
    burst: int | None = Field(None, ge=1, description="null: limits.rate.burst.")


class AuthSpec(Section):
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


class ModelAuthSpec(Section):
    """A model entry's own `auth:`: keys accepted on its routes only (beside the shared ones)."""

    api_keys: list[str] | None = Field(
        None, description="Keys accepted on this model's routes only, beside auth.api_keys; null: none of its own."
    )

    _split = field_validator("api_keys", mode="before")(lambda v: split_keys(v, "add no keys of its own"))
    _not_blank = field_validator("api_keys")(lambda v: keys_not_blank(v))
