"""API keys: read once at start, compared in constant time, never logged.

`auth.api_keys` open every protected path; a model entry's own `auth.api_keys` open its
routes only; `auth.admin_keys` open `/admin/...` only (and nothing else does)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from servectl.spec import AuthSpec

ALWAYS_OPEN = frozenset({"/health", "/ready"})  # probes (protocols add theirs)
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPS = frozenset({"/metrics", "/info", "/stats"})
ADMIN_PREFIX = "/admin/"
ANONYMOUS = "anonymous"  # the key name of requests made without a key


class KeySet:
    """Accepted keys; membership is checked against every key, so timing says nothing."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode() for k in keys]

    def __contains__(self, given: object) -> bool:
        if not isinstance(given, bytes):
            return False
        found = False
        for key in self._keys:  # no early exit: timing does not say which key matched
            found |= hmac.compare_digest(given, key)
        return found

    def __bool__(self) -> bool:
        return bool(self._keys)


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    """The key of `Authorization: Bearer KEY` or `X-API-Key: KEY`, if any."""
    given = headers.get(b"x-api-key")
    if given is not None:
        return given
    scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


class APIKeyAuth:
    """Decides which paths need a key and whether a request carries a valid one."""

    def __init__(self, spec: AuthSpec, probes: frozenset[str] = frozenset()) -> None:
        self.named = {k.encode(): named.name for k, named in spec.named_keys().items()}
        self.api_keys = list(spec.named_keys())
        self.keys = KeySet(self.api_keys)
        self.enabled = bool(self.keys)
        self.admin = KeySet(spec.admin_keys) if spec.admin_keys else None  # None: admin routes off
        open_paths = set(ALWAYS_OPEN | probes)
        if not spec.protect_docs:
            open_paths |= DOCS
        if not spec.protect_metrics:
            open_paths |= OPS
        self.open_paths = frozenset(open_paths)

    def required(self, path: str) -> bool:
        """Every path needs a key when keys are set, but for the documented open ones."""
        return self.enabled and path not in self.open_paths

    def accepts(self, headers: dict[bytes, bytes]) -> bool:
        """True for `Authorization: Bearer KEY` or `X-API-Key: KEY` with a known key."""
        return presented_key(headers) in self.keys

    def name_of(self, given: bytes | None) -> str:
        """The name of an (already accepted) key: `auth.keys`' name, `api_keys.N`,
        `model-key` for a model's own key, or `anonymous` for none."""
        if given is None:
            return ANONYMOUS
        return self.named.get(given, "model-key")

    def for_model(self, own: list[str] | None) -> KeySet | None:
        """The keys a model's routes accept: the shared ones and its own; None: open."""
        keys = [*self.api_keys, *(own or [])]
        return KeySet(keys) if keys else None
