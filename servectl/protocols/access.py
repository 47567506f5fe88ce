"""Who is asking, on the paths that are not a model route (/stats, /info, /metrics,
/v1/models, V2 metadata): the edge puts the caller's `Access` in the scope, the routes
read it to show a key what it may see. Below the protocols: their routes read it too."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ANONYMOUS = "anonymous"  # the key name of requests made without a key
ACCESS = "servectl.access"  # the scope key of the caller's `Access` on the paths FastAPI answers


class Access:
    """Who called a shared path (not a model route), as far as what it may see goes: its
    key's name, the models that key may use (None: every one), and whether it is an admin
    key (which sees every key's usage; any other key sees its own only)."""

    __slots__ = ("admin", "models", "name")

    def __init__(self, name: str, models: frozenset[str] | None = None, admin: bool = False) -> None:
        self.name = name
        self.models = models
        self.admin = admin

    def sees(self, model: str) -> bool:
        return self.models is None or model in self.models


def access_of(scope: Mapping[str, Any]) -> Access | None:
    """The caller's `Access` on a path FastAPI answers; None: it may see everything (auth is
    off, or the path was opened with `protect_metrics`/`protect_docs: false`)."""
    found = scope.get(ACCESS)
    return found if isinstance(found, Access) else None
