"""RedisStreamSink under real Redis faults, and hostile settings: every record ends up counted once, as what became of
it (when Redis answered, ``written`` is the stream's ``XLEN``; a batch without a reply is ``failed``, though Redis
may apply it later), and the writer goes on.

- a frozen Redis (SIGSTOP): the batch times out and is counted ``failed``, the next ones are written after SIGCONT;
- Redis at ``maxmemory`` (``noeviction``) part-way through a batch: it stores the first entries and refuses the rest
  (``OOM``), and the log counts each row as Redis answered it;
- the stream's key holding another type (``WRONGTYPE``): every row ``failed``;
- settings that made every batch fail, or counted rows ``written`` that Redis never kept (``maxlen=0``, an asyncio
  client), are refused when the sink is made.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.feedback import PredictionLog, RedisStreamSink, redis_sink
from aiwatch.metrics import Metrics
from tests.servers import Process, redis_server_process, wait_until

RESULTS = ("queued", "dropped", "written", "failed", "lost")


@pytest.fixture
def server() -> Iterator[tuple[str, Process]]:
    with redis_server_process() as (url, proc):
        yield url, proc


def counts(registry: CollectorRegistry) -> dict[str, float]:
    def one(result: str) -> float:
        labels = {"log": "predictions", "result": result}
        return registry.get_sample_value("aiwatch_prediction_log_records_total", labels) or 0.0

    return {result: one(result) for result in RESULTS}


def errors(registry: CollectorRegistry) -> float:
    labels = {"component": "prediction_log"}
    return registry.get_sample_value("aiwatch_instrumentation_errors_total", labels) or 0.0


def every_record_counted_once(registry: CollectorRegistry) -> dict[str, float]:
    got = counts(registry)
    assert got["written"] + got["failed"] + got["dropped"] == got["queued"] + got["dropped"], got
    assert got["lost"] == 0, got
    return got


def log_many(log: PredictionLog, n: int, **inputs: Any) -> None:
    for i in range(n):
        assert log.log("ranker", {"i": i, **inputs}, {"score": 0.5}) is not None


# --- a frozen Redis -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_frozen_redis_fails_the_batch_and_the_writer_goes_on(server: tuple[str, Process]) -> None:
    url, proc = server
    plain = redis.Redis.from_url(url)
    registry = CollectorRegistry()
    sink = RedisStreamSink(f"{url}?socket_timeout=0.3&socket_connect_timeout=0.3", "preds")
    log = PredictionLog(sink, registry=registry, batch_size=5, flush_seconds=0.1)
    log_many(log, 5)
    wait_until(lambda: counts(registry)["written"] == 5, 30, what="the first batch written")
    os.killpg(proc.proc.pid, signal.SIGSTOP)
    try:
        log_many(log, 5)
        # not blocked for ever: the batch times out and is counted
        wait_until(lambda: counts(registry)["failed"] == 5, 30, what="the frozen batch counted failed")
    finally:
        os.killpg(proc.proc.pid, signal.SIGCONT)
    log_many(log, 5)
    wait_until(lambda: counts(registry)["written"] == 10, 30, what="writing again after SIGCONT")
    log.close(timeout=30)
    assert every_record_counted_once(registry) == {"queued": 15, "dropped": 0, "written": 10, "failed": 5,
                                                   "lost": 0}
    assert errors(registry) == 1  # the timed-out batch; close() found the writer stopped
    # "failed" is the batch without a reply, not a batch known to be missing: its XADDs sat in the frozen server's
    # socket buffer and were applied once it resumed (documented in the sink's module docstring)
    wait_until(lambda: plain.xlen("preds") == 15, 30, what="the frozen batch applied after SIGCONT")
    plain.close()


def test_the_client_made_from_a_url_has_timeouts_and_the_url_may_set_its_own() -> None:
    # no connection is made here: redis-py connects on the first command
    own = RedisStreamSink("redis://127.0.0.1:1/0").client.connection_pool.connection_kwargs
    default = redis_sink.DEFAULT_TIMEOUT
    assert (own.get("socket_timeout"), own.get("socket_connect_timeout")) == (default, default)
    assert 0 < default <= 30
    url = "redis://127.0.0.1:1/0?socket_timeout=0.3&socket_connect_timeout=0.2"
    chosen = RedisStreamSink(url).client.connection_pool.connection_kwargs
    assert (chosen["socket_timeout"], chosen["socket_connect_timeout"]) == (0.3, 0.2)


def test_a_client_passed_in_is_used_as_it_is() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_timeout=None)
    kwargs = dict(client.connection_pool.connection_kwargs)
    sink = RedisStreamSink(client, "preds")
    assert sink.client is client and client.connection_pool.connection_kwargs == kwargs


# --- Redis refuses some or all of a batch ---------------------------------------------------------------------


@pytest.mark.slow
def test_redis_out_of_memory_part_way_through_a_batch_counts_each_row(server: tuple[str, Process]) -> None:
    url, _proc = server
    plain = redis.Redis.from_url(url)
    registry = CollectorRegistry()
    # one batch of 100 rows (the writer wakes when the 100th is queued) of ~10 kB each: about 1 MB, past the 300 kB
    # left, so Redis stores the first entries and answers OOM to every XADD after memory crossed maxmemory
    log = PredictionLog(RedisStreamSink(url, "preds"), registry=registry, batch_size=100, flush_seconds=60)
    plain.config_set("maxmemory-policy", "noeviction")
    plain.config_set("maxmemory", plain.info("memory")["used_memory"] + 300_000)
    blob = "x" * 10_000
    log_many(log, 100, blob=blob)
    assert log.flush(30)
    got = every_record_counted_once(registry)
    stored = plain.xlen("preds")
    assert 0 < stored < 100, stored  # a batch partly stored
    assert (got["written"], got["failed"]) == (stored, 100 - stored)
    assert errors(registry) == 1  # once per batch, not per row

    log_many(log, 100, blob=blob)  # Redis is full: every XADD refused, the MAXLEN ~ cap cannot make room
    assert log.flush(30)
    got = every_record_counted_once(registry)
    assert plain.xlen("preds") == stored
    assert (got["written"], got["failed"]) == (stored, 200 - stored)

    plain.config_set("maxmemory", 0)  # room again: the next batch is written whole
    log_many(log, 100, blob=blob)
    log.close(timeout=30)
    got = every_record_counted_once(registry)
    assert plain.xlen("preds") == got["written"] == stored + 100
    assert got["failed"] == 200 - stored
    plain.close()


@pytest.mark.slow
def test_a_key_of_another_type_fails_every_row_and_the_writer_goes_on(server: tuple[str, Process]) -> None:
    url, _proc = server
    plain = redis.Redis.from_url(url)
    plain.set("preds", "not a stream")
    registry = CollectorRegistry()
    log = PredictionLog(RedisStreamSink(url, "preds"), registry=registry, batch_size=10, flush_seconds=60)
    log_many(log, 10)
    assert log.flush(30)
    assert every_record_counted_once(registry)["failed"] == 10
    assert plain.get("preds") == b"not a stream"  # untouched
    plain.delete("preds")
    log_many(log, 10)
    log.close(timeout=30)
    got = every_record_counted_once(registry)
    assert (got["written"], got["failed"]) == (10, 10) and plain.xlen("preds") == 10
    assert errors(registry) == 1
    plain.close()


# --- hostile settings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("maxlen", [0, -1, True, False, 1.5, 1e6, "100", 2**63, 2**64])
def test_a_maxlen_that_is_no_count_of_entries_is_refused(maxlen: Any) -> None:
    # 0 was the worst: MAXLEN ~ 0 trims every entry as it is added, while the log counted each one written
    with pytest.raises(ValueError, match="maxlen"):
        RedisStreamSink("redis://127.0.0.1:1/0", maxlen=maxlen)


@pytest.mark.parametrize("maxlen", [None, 1, 2**63 - 1])
def test_a_maxlen_in_range_or_none_is_kept(maxlen: int | None) -> None:
    assert RedisStreamSink("redis://127.0.0.1:1/0", maxlen=maxlen).maxlen == maxlen


@pytest.mark.parametrize("stream", [None, 5, "", b"", ["preds"], 1.5])
def test_a_stream_name_that_is_no_key_is_refused(stream: Any) -> None:
    with pytest.raises(ValueError, match="stream"):
        RedisStreamSink("redis://127.0.0.1:1/0", stream)


@pytest.mark.parametrize("client", [None, 6379, b"redis://127.0.0.1:1/0", object()])
def test_something_that_is_no_client_is_refused(client: Any) -> None:
    with pytest.raises(TypeError, match="redis"):
        RedisStreamSink(client)


def test_an_asyncio_client_is_refused(metrics: Metrics) -> None:
    # its pipeline's execute() is a coroutine: never awaited on the writer thread, so nothing was stored while every
    # row was counted written
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0")
    for wrapped in (client, aiwatch.instrument_redis(client, cache="users", metrics=metrics)):
        with pytest.raises(TypeError, match="asyncio"):
            RedisStreamSink(wrapped)
