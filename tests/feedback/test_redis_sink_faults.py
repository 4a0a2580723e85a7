"""RedisStreamSink under real Redis faults: every record ends up counted once, as what became of
it (when Redis answered, ``written`` is the stream's ``XLEN``; a batch without a reply is ``failed``, though Redis
may apply it later), and the writer goes on.

- Redis at ``maxmemory`` (``noeviction``) part-way through a batch: it stores the first entries and refuses the rest
  (``OOM``), and the log counts each row as Redis answered it;
- the stream's key holding another type (``WRONGTYPE``): every row ``failed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from aiwatch.feedback import PredictionLog, RedisStreamSink
from tests.servers import Process, redis_server_process

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
