"""The feature-cache wrappers behave like what they wrap: ``with`` / ``async with`` on the Redis wrapper (real
redis-server), and ``instrument_mapping`` counts only lookups (``m[key]``, ``m.get(key)``), not ``values()``,
``items()``, ``==`` or the other dict methods."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from prometheus_client import CollectorRegistry

from aiwatch.metrics import Metrics
from aiwatch.signals.cache import InstrumentedRedis, instrument_mapping, instrument_redis
from tests.servers import redis_server


def lookups(registry: CollectorRegistry, cache: str) -> dict[str, float]:
    return {r: registry.get_sample_value("aiwatch_feature_cache_requests_total", {"cache": cache, "result": r}) or 0.0
            for r in ("hit", "miss", "error")}


def test_mapping_views_equality_and_dict_methods_are_not_lookups(registry: CollectorRegistry,
                                                                 metrics: Metrics) -> None:
    m = instrument_mapping({"a": 1, "b": 2}, cache="local", metrics=metrics)
    assert sorted(m.values()) == [1, 2]
    assert sorted(m.items()) == [("a", 1), ("b", 2)]
    assert sorted(m.keys()) == ["a", "b"]
    assert m == {"a": 1, "b": 2} and m != {"a": 1}
    assert {"a": 1, "b": 2} == m  # noqa: SIM300 - the reflected comparison, dict first
    assert m == instrument_mapping({"a": 1, "b": 2}, cache="local", metrics=metrics)
    assert m.copy() == {"a": 1, "b": 2}  # the mapping's own method
    assert m.setdefault("c", 3) == 3 and m.pop("c") == 3 and m.pop("zz", None) is None
    m.update(d=4)
    assert m.popitem() == ("d", 4)
    assert lookups(registry, "local") == {"hit": 0, "miss": 0, "error": 0}
    assert m["a"] == 1 and m.get("zz") is None  # the lookups are
    assert lookups(registry, "local") == {"hit": 1, "miss": 1, "error": 0}
    m.clear()


def test_copies_reversed_and_union_of_a_mapping_behave_as_the_mappings_own(registry: CollectorRegistry,
                                                                          metrics: Metrics) -> None:
    # before: copy.copy() returned a wrapper around the same dict (clearing the original emptied the "copy"),
    # copy.deepcopy() raised "cannot pickle '_thread.lock' object", and reversed(m), m | d, d | m and m |= d raised
    # TypeError where the dict answers
    m = instrument_mapping({"a": [1], "b": [2]}, cache="local", metrics=metrics)
    shallow, deep = copy.copy(m), copy.deepcopy(m)
    m["a"].append(10)
    m.clear()
    assert shallow == {"a": [1, 10], "b": [2]} and deep == {"a": [1], "b": [2]}
    assert type(shallow) is type(deep) is type(m)
    assert shallow["a"] == [1, 10] and deep.get("zz") is None  # a copy is the same cache's: its lookups count there
    assert lookups(registry, "local") == {"hit": 2, "miss": 1, "error": 0}  # m["a"] too
    assert list(reversed(shallow)) == ["b", "a"]
    assert shallow | {"c": [3]} == {"a": [1, 10], "b": [2], "c": [3]}
    assert {"c": [3]} | shallow == {"c": [3], "a": [1, 10], "b": [2]}
    before = shallow
    shallow |= {"d": [4]}
    assert shallow is before and shallow.mapping == {"a": [1, 10], "b": [2], "d": [4]}
    assert lookups(registry, "local") == {"hit": 2, "miss": 1, "error": 0}
    assert len(m) == 0


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        redis.Redis.from_url(url).set("user:1", "31")
        yield url


@pytest.mark.slow
def test_redis_wrapper_works_in_a_with_block(redis_url: str, registry: CollectorRegistry, metrics: Metrics) -> None:
    with instrument_redis(redis.Redis.from_url(redis_url, decode_responses=True), cache="sync",
                          metrics=metrics) as client:
        assert isinstance(client, InstrumentedRedis)
        assert client.get("user:1") == "31"
    assert lookups(registry, "sync") == {"hit": 1, "miss": 0, "error": 0}


@pytest.mark.slow
async def test_redis_wrapper_works_in_an_async_with_block(redis_url: str, registry: CollectorRegistry,
                                                          metrics: Metrics) -> None:
    async with instrument_redis(redis.asyncio.Redis.from_url(redis_url, decode_responses=True), cache="async",
                                metrics=metrics) as client:
        assert isinstance(client, InstrumentedRedis)
        assert await client.get("user:404") is None
    assert lookups(registry, "async") == {"hit": 0, "miss": 1, "error": 0}
