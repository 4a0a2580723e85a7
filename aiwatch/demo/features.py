"""The demo's feature store: user profile features behind a cache (in-process LRU by default, or Redis).

Every lookup counts ``aiwatch_feature_cache_requests_total{cache, result}`` (hit, miss or error) and observes
``aiwatch_feature_cache_lookup_duration_seconds``. A failing cache (Redis down) is counted as ``error`` and the
request falls through to the backing store: a cache must never fail a request. To be replaced by the feature-cache
wrappers of ``aiwatch.signals``.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from aiwatch.metrics import Metrics
from aiwatch.safety import record_error

Profile = dict[str, float]


class FeatureCache(Protocol):
    async def get(self, key: str) -> Profile | None: ...

    async def set(self, key: str, value: Profile) -> None: ...

    async def close(self) -> None: ...


class LruCache:
    """A bounded in-process cache: the least recently used entry goes first."""

    def __init__(self, capacity: int = 1500) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._data: OrderedDict[str, Profile] = OrderedDict()

    async def get(self, key: str) -> Profile | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: Profile) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Profiles as JSON strings in Redis under ``prefix``, expiring after ``ttl`` seconds."""

    def __init__(self, url: str, prefix: str = "aiwatch-demo:user:", ttl: int = 300) -> None:
        from aiwatch._optional import require

        redis_asyncio: Any = require("redis.asyncio", "all")
        self._client: Any = redis_asyncio.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.prefix = prefix
        self.ttl = ttl

    async def get(self, key: str) -> Profile | None:
        raw = await self._client.get(self.prefix + key)
        return None if raw is None else dict(json.loads(raw))

    async def set(self, key: str, value: Profile) -> None:
        await self._client.set(self.prefix + key, json.dumps(value), ex=self.ttl)

    async def close(self) -> None:
        await self._client.aclose()


def backing_profile(user_id: int) -> Profile:
    """The offline store's answer for a user (deterministic per user)."""
    rng = np.random.default_rng(user_id)
    return {"avg_basket_value": round(float(rng.lognormal(3.6, 0.5)), 2),
            "days_since_last_order": float(rng.integers(0, 90)),
            "orders_last_year": float(rng.poisson(6))}


class FeatureStore:
    """``await store.user_profile(user_id)``: from the cache when it can, else from the backing store."""

    def __init__(self, cache: FeatureCache, metrics: Metrics, name: str = "user_features") -> None:
        self.cache = cache
        self.name = name
        self._metrics = metrics
        self._results = {r: metrics.child(metrics.feature_cache_requests, (name, r)) for r in ("hit", "miss", "error")}
        self._durations = {r: metrics.child(metrics.feature_cache_lookup_duration, (name, r))
                           for r in ("hit", "miss", "error")}

    async def user_profile(self, user_id: int) -> Profile:
        key = str(user_id)
        start = time.perf_counter()
        try:
            found = await self.cache.get(key)
            result = "miss" if found is None else "hit"
        except Exception as exc:
            record_error("demo_feature_cache", exc, self._metrics)
            found, result = None, "error"
        self._count(result, time.perf_counter() - start)
        if found is not None:
            return found
        profile = backing_profile(user_id)
        if result == "miss":
            try:
                await self.cache.set(key, profile)
            except Exception as exc:
                record_error("demo_feature_cache", exc, self._metrics)
        return profile

    def _count(self, result: str, seconds: float) -> None:
        try:
            self._results[result].inc()
            self._durations[result].observe(seconds)
        except Exception as exc:
            record_error("metrics", exc, self._metrics)
