"""Each model's rate limiter and response cache, shared by all of its routes (its chat,
completions and embeddings count against one budget), made when first needed and again
when a reload changes their settings."""

from __future__ import annotations

import contextlib
import hashlib

import orjson

from servectl.metrics import Metrics
from servectl.server.cache import ResponseCache
from servectl.server.ratelimit import RateLimiter
from servectl.spec import CacheSpec, RateSpec, Spec


class Guards:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.limiters: dict[tuple[str, RateSpec], RateLimiter] = {}
        self.caches: dict[tuple[str, CacheSpec, str], ResponseCache] = {}

    def limiter(self, spec: Spec) -> RateLimiter | None:
        """The model's limiter; None when neither it nor a named key sets a limit."""
        rate, keys = spec.limits.rate, spec.auth.named_keys()
        if not rate.limited and not any(k.requests_per_minute or k.tokens_per_minute for k in keys.values()):
            return None
        found = self.limiters.get((spec.name, rate))
        if found is None:
            found = RateLimiter(rate, keys, spec.name, self.metrics.model(spec.name))
            self.limiters[(spec.name, rate)] = found
        return found

    def cache(self, spec: Spec) -> ResponseCache | None:
        """The model's cache (None: off). Its keys carry a digest of the model's spec, so a
        reload that changes the model never answers from the old one's entries."""
        if spec.cache.backend == "off":
            return None
        what = spec.model_dump(mode="json", include={"model", "handler", "api"})  # not the port: replicas share it
        version = hashlib.sha256(orjson.dumps(what, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        found = self.caches.get((spec.name, spec.cache, version))
        if found is None:
            found = ResponseCache(spec.cache, spec.name, version, self.metrics.model(spec.name))
            self.caches[(spec.name, spec.cache, version)] = found
        return found

    async def close(self) -> None:
        closing: list[RateLimiter | ResponseCache] = [*self.limiters.values(), *self.caches.values()]
        for each in closing:
            with contextlib.suppress(Exception):
                await each.close()
