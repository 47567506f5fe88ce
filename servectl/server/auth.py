"""API keys: read once at start, compared in constant time, never logged.

While any key exists anywhere in the spec (`auth.api_keys`, `auth.keys`, a model entry's own
`auth.api_keys`, `auth.admin_keys`), every path but the probes needs one. `auth.api_keys`
and `auth.keys` open every model and the shared paths; a model entry's own keys open its
routes and the shared paths scoped to its models (an `Access`); `auth.admin_keys` open
`/admin/...` (nothing else does) and the shared paths unscoped (`/stats` with every key's
usage), never a model route. A model with no key of its own and no shared keys stays open."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Protocol

from servectl.protocols.access import ACCESS as ACCESS
from servectl.protocols.access import ANONYMOUS as ANONYMOUS
from servectl.protocols.access import Access as Access
from servectl.protocols.access import access_of as access_of
from servectl.runtime.base import ModelRuntime
from servectl.spec import AuthSpec, Spec

ALWAYS_OPEN = frozenset({"/health", "/ready"})  # probes (protocols add theirs)
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPS = frozenset({"/metrics", "/info", "/stats"})
METRICS = frozenset({"/metrics", "/info"})  # what `protect_metrics: false` opens (/stats shows usage by key: never)
ADMIN_PREFIX = "/admin/"


class Reloaded(Protocol):
    """What `APIKeyAuth.follow`s: the served models, and a count moved by each reload."""

    version: int

    @property
    def models(self) -> dict[str, ModelRuntime]: ...


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

    def __init__(self, spec: AuthSpec, probes: frozenset[str] = frozenset(), models: Iterable[Spec] = ()) -> None:
        self.named = {k.encode(): named.name for k, named in spec.named_keys().items()}
        self.api_keys = list(spec.named_keys())
        self.keys = KeySet(self.api_keys)
        self.admin = KeySet(spec.admin_keys) if spec.admin_keys else None  # None: admin routes off
        self.admin_names = {k.encode(): f"admin_keys.{i}" for i, k in enumerate(spec.admin_keys or [])}
        open_paths = set(ALWAYS_OPEN | probes)
        if spec.protect_docs is False:  # null (the default): protected while keys exist
            open_paths |= DOCS
        if spec.protect_metrics is False:
            open_paths |= METRICS
        self.open_paths = frozenset(open_paths)
        self.deployment: Reloaded | None = None
        self._version = 0
        self.use_models(models)

    def follow(self, deployment: Reloaded) -> None:
        """Take its models' own keys now, and again after each reload."""
        self.deployment = deployment
        self._version = deployment.version
        self.use_models(m.spec for m in deployment.models.values())

    def _current(self) -> None:
        if self.deployment is not None and self._version != self.deployment.version:
            self.follow(self.deployment)

    def use_models(self, models: Iterable[Spec]) -> None:
        """Take the models' own keys (`models[i].auth.api_keys`; again after a reload): each is
        named `MODEL.api_keys.N` after the first entry listing it, and opens the models listing
        it (and those open to anyone: no shared keys, none of their own)."""
        own: dict[bytes, tuple[str, set[str]]] = {}
        models = list(models)
        for spec in models:
            for i, key in enumerate(spec.own_api_keys or []):
                own.setdefault(key.encode(), (f"{spec.name}.api_keys.{i}", set()))[1].add(spec.name)
        unkeyed = frozenset() if self.api_keys else frozenset(s.name for s in models if not s.own_api_keys)
        self.own = {key: (name, frozenset(used) | unkeyed) for key, (name, used) in own.items()}
        self.own_keys = KeySet(key.decode() for key in self.own)
        self.enabled = bool(self.keys or self.admin or self.own_keys)  # any key anywhere

    def required(self, path: str) -> bool:
        """Every path needs a key while any key exists, but for the documented open ones."""
        self._current()
        return self.enabled and path not in self.open_paths

    def accepts(self, headers: dict[bytes, bytes]) -> bool:
        """True for `Authorization: Bearer KEY` or `X-API-Key: KEY` with a known shared key."""
        return presented_key(headers) in self.keys

    def access(self, given: bytes | None) -> Access | None:
        """Who the key `given` is on a shared path; None: no key, or not a known one."""
        if given is None:
            return None
        if self.admin is not None and given in self.admin:
            return Access(self.admin_names.get(given, "admin"), None, admin=True)
        if given in self.keys:
            return Access(self.named.get(given, "api_keys"))
        self._current()
        if given in self.own_keys:
            name, models = self.own[given]
            return Access(name, models)
        return None

    def name_of(self, given: bytes | None) -> str:
        """The name of an (already accepted) key: `auth.keys`' name, `api_keys.N`,
        `MODEL.api_keys.N` for a model's own key, or `anonymous` for none."""
        if given is None:
            return ANONYMOUS
        named = self.named.get(given)
        if named is not None:
            return named
        self._current()
        own = self.own.get(given)
        return own[0] if own is not None else "model-key"

    def for_model(self, own: list[str] | None) -> KeySet | None:
        """The keys a model's routes accept: the shared ones and its own; None: open."""
        keys = [*self.api_keys, *(own or [])]
        return KeySet(keys) if keys else None
