"""A real redis-server that goes down or freezes (SIGSTOP) under an instrumented feature cache: the app gets
redis' own exceptions untouched, every failed lookup is counted as an ``error``, the time lost shows up in the
request's ``features`` phase, and lookups recover when the server does."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from fastapi import FastAPI
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

import aiwatch
from aiwatch.metrics import Metrics
from tests.http.asgi_driver import call
from tests.servers import Process, redis_server_process, wait_until

pytestmark = pytest.mark.slow

SOCKET_TIMEOUT = 0.3


@pytest.fixture
def server() -> Iterator[tuple[str, Process]]:
    with redis_server_process() as (url, proc):
        redis.Redis.from_url(url).set("user:1", "31")
        yield url, proc


def options(asyncio: bool = False) -> dict[str, Any]:
    # no retries: one lookup is one attempt, so the counts are exact (the asyncio client's own Retry: redis 8
    # converts a synchronous one, with a warning)
    retry = AsyncRetry(NoBackoff(), 0) if asyncio else Retry(NoBackoff(), 0)
    return {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT, "retry": retry,
            "decode_responses": True}


def results(metrics: Metrics, cache: str) -> dict[str, float]:
    def one(result: str) -> float:
        labels = {"cache": cache, "result": result}
        return metrics.registry.get_sample_value("aiwatch_feature_cache_requests_total", labels) or 0.0

    return {r: one(r) for r in ("hit", "miss", "error")}


def freeze(proc: Process) -> None:
    os.killpg(proc.proc.pid, signal.SIGSTOP)


def thaw(proc: Process) -> None:
    os.killpg(proc.proc.pid, signal.SIGCONT)


def test_redis_down_raises_redis_errors_untouched_and_counts_them(server: tuple[str, Process],
                                                                   metrics: Metrics) -> None:
    url, proc = server
    store = aiwatch.instrument_redis(redis.Redis.from_url(url, **options()), cache="users", metrics=metrics)
    assert store.get("user:1") == "31"
    proc.stop()
    for _ in range(3):
        with pytest.raises(redis.ConnectionError) as info:
            store.get("user:1")
        assert type(info.value) is redis.ConnectionError
    with pytest.raises(redis.ConnectionError):
        store.mget(["user:1", "user:2"])
    assert results(metrics, "users") == {"hit": 1, "miss": 0, "error": 3 + 2}


async def test_redis_down_under_the_asyncio_client(server: tuple[str, Process], metrics: Metrics) -> None:
    url, proc = server
    store = aiwatch.instrument_redis(redis.asyncio.Redis.from_url(url, **options(asyncio=True)), cache="users",
                                     metrics=metrics)
    assert await store.get("user:404") is None
    proc.stop()
    with pytest.raises(redis.ConnectionError):
        await store.get("user:1")
    assert results(metrics, "users") == {"hit": 0, "miss": 1, "error": 1}
    await store.aclose()


def test_a_frozen_redis_times_out_counts_errors_and_recovers(server: tuple[str, Process], metrics: Metrics) -> None:
    url, proc = server
    store = aiwatch.instrument_redis(redis.Redis.from_url(url, **options()), cache="users", metrics=metrics)
    assert store.get("user:1") == "31"
    freeze(proc)
    try:
        with pytest.raises(redis.TimeoutError):
            store.get("user:1")
    finally:
        thaw(proc)
    # the timed-out connection is dropped by redis-py; the next lookups reconnect
    wait_until(lambda: store.get("user:1") == "31", 10, what="redis answering again")
    counts = results(metrics, "users")
    assert counts["error"] == 1 and counts["hit"] >= 2
    slow = metrics.registry.get_sample_value("aiwatch_feature_cache_lookup_duration_seconds_sum",
                                             {"cache": "users", "result": "error"})
    assert slow is not None and slow >= SOCKET_TIMEOUT * 0.9  # the lookup waited out the socket timeout


def test_a_frozen_redis_inside_a_request_shows_in_its_features_phase(server: tuple[str, Process],
                                                                     metrics: Metrics) -> None:
    url, proc = server
    store = aiwatch.instrument_redis(redis.Redis.from_url(url, **options()), cache="users", metrics=metrics)
    api = FastAPI()

    @api.get("/predict")
    def predict() -> dict[str, Any]:
        try:
            age = store.get("user:1")
        except redis.RedisError:
            age = None  # the app's own fallback: serve with a default
        return {"age": age}

    app = aiwatch.instrument(api, metrics=metrics, service="svc")
    freeze(proc)
    try:
        response = asyncio.run(call(app, "/predict"))
    finally:
        thaw(proc)
    assert (response.status, response.body) == (200, b'{"age":null}')
    features = metrics.registry.get_sample_value("aiwatch_phase_duration_seconds_sum",
                                                 {"model_version": "",
                                                  "service": "svc", "model": "", "phase": "features"})
    assert features is not None and features >= SOCKET_TIMEOUT * 0.9
    assert results(metrics, "users")["error"] == 1


async def test_an_asyncio_lookup_the_app_times_out_on_a_frozen_redis_is_an_error(server: tuple[str, Process],
                                                                                  metrics: Metrics) -> None:
    # before: asyncio.wait_for cancels the lookup (CancelledError, not an Exception) and it was not counted at all
    url, proc = server
    unbounded = {**options(asyncio=True), "socket_timeout": None}
    store = aiwatch.instrument_redis(redis.asyncio.Redis.from_url(url, **unbounded),
                                     cache="users", metrics=metrics)
    assert await store.get("user:1") == "31"
    freeze(proc)
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(store.mget(["user:1", "user:2"]), SOCKET_TIMEOUT)
    finally:
        thaw(proc)
    assert results(metrics, "users") == {"hit": 1, "miss": 0, "error": 2}
    slow = metrics.registry.get_sample_value("aiwatch_feature_cache_lookup_duration_seconds_sum",
                                             {"cache": "users", "result": "error"})
    assert slow is not None and slow >= SOCKET_TIMEOUT * 0.9
    await store.aclose()
