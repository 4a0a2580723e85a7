"""The demo's feature store: user profile features behind a cache (in-process LRU by default, or Redis).

The cache is aiwatch's own feature-cache instrumentation: :func:`aiwatch.instrument_mapping` around an in-process
LRU, or :func:`aiwatch.instrument_redis` around a ``redis.asyncio`` client (``--redis URL``). Every lookup counts
``aiwatch_feature_cache_requests_total{cache, result}`` (hit, miss or error) and observes
``aiwatch_feature_cache_lookup_duration_seconds``. The wrappers re-raise the cache's own errors to the caller;
:class:`FeatureStore` catches them and falls through to the backing store, so a failing cache (Redis down) is
counted as ``error`` and never fails a request.

A scenario's feature-store fault (:class:`aiwatch.demo.faults.Faults`) slows every backing-store fetch and can flush
the cache: lookups then use a new key generation and nothing is written back while the fault lasts, so every lookup
is a real, counted miss.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol

import numpy as np

from aiwatch.demo.faults import Faults
from aiwatch.metrics import Metrics
from aiwatch.signals.cache import instrument_mapping, instrument_redis

Profile = dict[str, float]
CACHE = "user_features"

log = logging.getLogger("aiwatch.demo")


class FeatureCache(Protocol):
    async def get(self, key: str) -> Profile | None: ...

    async def set(self, key: str, value: Profile) -> None: ...

    async def close(self) -> None: ...


class LruDict(MutableMapping[str, Profile]):
    """A bounded mapping: the least recently used entry goes first when it is full."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._data: OrderedDict[str, Profile] = OrderedDict()

    def __getitem__(self, key: str) -> Profile:
        value = self._data[key]
        self._data.move_to_end(key)
        return value

    def __setitem__(self, key: str, value: Profile) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class LruCache:
    """The in-process cache: an :class:`LruDict` recorded by :func:`aiwatch.instrument_mapping`."""

    def __init__(self, metrics: Metrics, capacity: int = 1500, cache: str = CACHE) -> None:
        # phase=None: the gateway's own ``features`` phase already covers the lookup and the fallback.
        self.mapping = instrument_mapping(LruDict(capacity), cache=cache, phase=None, metrics=metrics)

    async def get(self, key: str) -> Profile | None:
        value: Profile | None = self.mapping.get(key)
        return value

    async def set(self, key: str, value: Profile) -> None:
        self.mapping[key] = value

    async def close(self) -> None:
        self.mapping.clear()


class RedisCache:
    """Profiles as JSON strings in Redis under ``prefix``, expiring after ``ttl`` seconds; the asyncio client is
    recorded by :func:`aiwatch.instrument_redis`."""

    def __init__(self, url: str, metrics: Metrics, prefix: str = "aiwatch-demo:user:", ttl: int = 300,
                 cache: str = CACHE) -> None:
        from aiwatch._optional import require

        redis_asyncio: Any = require("redis.asyncio", "redis")
        client = redis_asyncio.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.client: Any = instrument_redis(client, cache=cache, phase=None, metrics=metrics)
        self.prefix = prefix
        self.ttl = ttl

    async def get(self, key: str) -> Profile | None:
        raw = await self.client.get(self.prefix + key)
        return None if raw is None else dict(json.loads(raw))

    async def set(self, key: str, value: Profile) -> None:
        await self.client.set(self.prefix + key, json.dumps(value), ex=self.ttl)

    async def close(self) -> None:
        await self.client.aclose()


def backing_profile(user_id: int) -> Profile:
    """The offline store's answer for a user (deterministic per user)."""
    rng = np.random.default_rng(user_id)
    return {"avg_basket_value": round(float(rng.lognormal(3.6, 0.5)), 2),
            "days_since_last_order": float(rng.integers(0, 90)),
            "orders_last_year": float(rng.poisson(6))}


class FeatureStore:
    """``await store.user_profile(user_id)``: from the cache when it can, else from the backing store.

    The cache's wrapper counts each lookup (hit, miss, error); a cache that raises is logged (once per burst of
    errors) and skipped: the request gets the backing store's answer."""

    def __init__(self, cache: FeatureCache, faults: Faults | None = None) -> None:
        self.cache = cache
        self.faults = faults or Faults()
        self._failing = False

    async def user_profile(self, user_id: int) -> Profile:
        faults = self.faults
        key = f"{faults.cache_generation}:{user_id}" if faults.cache_generation else str(user_id)
        try:
            found = await self.cache.get(key)
        except Exception as exc:
            self._cache_failed(exc)
            return await self._backing(user_id)
        self._failing = False
        if found is not None:
            return found
        profile = await self._backing(user_id)
        if faults.cold_cache:
            return profile
        try:
            await self.cache.set(key, profile)
        except Exception as exc:
            self._cache_failed(exc)
        return profile

    async def _backing(self, user_id: int) -> Profile:
        delay = self.faults.features_delay
        if delay > 0:
            await asyncio.sleep(delay)
        return backing_profile(user_id)

    def _cache_failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("feature cache failed (%s: %s); serving from the backing store", type(exc).__name__, exc)
        self._failing = True
