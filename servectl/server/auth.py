"""API keys: read once at start, compared in constant time, never logged."""

from __future__ import annotations

import hmac

from servectl.spec import AuthSpec

ALWAYS_OPEN = frozenset({"/health", "/ready"})  # probes (protocols add theirs)
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPS = frozenset({"/metrics", "/info"})


class APIKeyAuth:
    """Decides which paths need a key and whether a request carries a valid one."""

    def __init__(self, spec: AuthSpec, probes: frozenset[str] = frozenset()) -> None:
        self._keys = [k.encode() for k in spec.api_keys or []]
        self.enabled = bool(self._keys)
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
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if scheme.lower() != b"bearer":
                return False
            given = token.strip()
        found = False
        for key in self._keys:  # no early exit: timing does not say which key matched
            found |= hmac.compare_digest(given, key)
        return found
