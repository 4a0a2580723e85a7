"""instrument_redis against a real redis-server (sync and asyncio clients)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.retry import Retry

from aiwatch.metrics import Metrics
from aiwatch.signals.cache import instrument_redis
from tests.servers import free_port, redis_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        seed = redis.Redis.from_url(url)
        seed.set("user:1", "31")
        seed.set("user:2", "45")
        seed.hset("item:1", mapping={"price": "9.5", "category": "shoes"})
        seed.close()
        yield url


def counts(registry: CollectorRegistry, cache: str) -> tuple[float, float, float]:
    def one(result: str) -> float:
        return registry.get_sample_value("aiwatch_feature_cache_requests_total",
                                         {"cache": cache, "result": result}) or 0.0

    return one("hit"), one("miss"), one("error")


def test_get_mget_hgetall(redis_url: str, registry: CollectorRegistry, metrics: Metrics) -> None:
    client = instrument_redis(redis.Redis.from_url(redis_url, decode_responses=True), cache="features",
                              metrics=metrics)
    assert client.get("user:1") == "31"
    assert client.get("user:404") is None
    assert counts(registry, "features") == (1, 1, 0)
    assert client.mget(["user:1", "user:404", "user:2"]) == ["31", None, "45"]
    assert client.mget(iter(["user:2"])) == ["45"]  # an iterator is passed on intact
    assert client.mget("user:1", "user:403") == ["31", None]
    assert counts(registry, "features") == (5, 3, 0)
    assert client.hgetall("item:1") == {"price": "9.5", "category": "shoes"}
    assert client.hgetall("item:404") == {}
    assert counts(registry, "features") == (6, 4, 0)
    assert client.ping() is True  # everything else is the client's own
    assert registry.get_sample_value("aiwatch_feature_cache_lookup_duration_seconds_count",
                                     {"cache": "features", "result": "miss"}) == 4.0  # get, 2 mgets, hgetall
    client.close()


def test_redis_errors_are_counted_and_reraised_untouched(redis_url: str, registry: CollectorRegistry,
                                                         metrics: Metrics) -> None:
    client = instrument_redis(redis.Redis.from_url(redis_url), cache="features", metrics=metrics)
    client.set("a-list", "x")
    client.client.rpush("list:1", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.hgetall("list:1")
    no_retry = Retry(NoBackoff(), 0)  # redis-py retries a refused connection with back-off by default
    dead = instrument_redis(redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                                        retry=no_retry), cache="features", metrics=metrics)
    with pytest.raises(redis.ConnectionError) as info:
        dead.mget(["a", "b", "c"])
    assert type(info.value) is redis.ConnectionError
    assert counts(registry, "features") == (0, 0, 4)  # one hgetall + three mget keys
    client.close()


async def test_asyncio_client(redis_url: str, registry: CollectorRegistry, metrics: Metrics) -> None:
    client = instrument_redis(redis.asyncio.Redis.from_url(redis_url, decode_responses=True), cache="async",
                              metrics=metrics)
    assert await client.get("user:2") == "45"
    assert await client.mget(["user:1", "nope"]) == ["31", None]
    assert await client.hgetall("item:404") == {}
    assert counts(registry, "async") == (2, 2, 0)
    await client.aclose()


def test_not_a_redis_client_is_a_clear_error(metrics: Metrics) -> None:
    with pytest.raises(TypeError, match="needs a redis-py client, got 'dict'"):
        instrument_redis({}, metrics=metrics)


def test_mget_passes_its_keys_on_as_redis_reads_them(redis_url: str, registry: CollectorRegistry,
                                                     metrics: Metrics) -> None:
    # before: a bytearray key was turned into a list of its byte values (mget(bytearray(b"user:1")) asked for six
    # keys "117", "115"...), and a key redis takes as one (None, an object) raised aiwatch's own TypeError
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    client = instrument_redis(redis.Redis.from_url(redis_url, decode_responses=True), cache="keys",
                              metrics=metrics)
    assert client.mget(bytearray(b"user:1")) == raw.mget(bytearray(b"user:1")) == ["31"]
    assert client.mget(bytearray(b"user:1"), "user:404") == ["31", None]
    assert counts(registry, "keys") == (2, 1, 0)
    with pytest.raises(redis.DataError) as raised:
        client.mget(None)
    with pytest.raises(redis.DataError) as expected:
        raw.mget(None)
    assert str(raised.value) == str(expected.value)
    assert counts(registry, "keys") == (2, 1, 1)
    client.close()
    raw.close()
