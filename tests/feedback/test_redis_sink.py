"""RedisStreamSink against a real redis-server: entries appended with XADD, typed values back with json.loads,
the stream capped near maxlen."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from aiwatch.feedback import PredictionLog, RedisStreamSink
from tests.servers import redis_server
from tests.test_forksafe import HANG, forked_child

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


def test_the_log_appends_one_entry_per_record(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with PredictionLog(RedisStreamSink(client, "preds:a"), registry=CollectorRegistry()) as log:
        rid = log.log("ranker", {"basket_value": 12, "country": "FR"}, {"score": 0.5}, version="v1",
                      trace_id=None, latency=0.02)
    entries = client.xrange("preds:a")
    assert len(entries) == 1
    fields = {k.decode(): json.loads(v) for k, v in entries[0][1].items()}
    assert fields["request_id"] == rid and fields["model"] == "ranker" and fields["model_version"] == "v1"
    assert fields["basket_value"] == 12.0 and fields["country"] == "FR" and fields["output.score"] == 0.5
    assert fields["latency_seconds"] == 0.02 and fields["error"] is False
    assert "trace_id" not in fields  # nulls are left out
    client.close()


def strict_json(text: bytes) -> Any:
    """``json.loads`` as Go's and JavaScript's parsers read JSON: NaN and Infinity are no JSON (RFC 8259)."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_are_stored_as_strict_json(redis_url: str) -> None:
    # Python's json.dumps writes bare NaN / Infinity, which Go's encoding/json and JSON.parse refuse
    client = redis.Redis.from_url(redis_url)
    with PredictionLog(RedisStreamSink(client, "preds:nan"), registry=CollectorRegistry()) as log:
        log.log("m", {"x": 1.5, "nan": math.nan, "big": 10**400}, {"p": -math.inf, "q": 0.5})
    sink = RedisStreamSink(client, "preds:nan")
    sink.write([{"request_id": "r2", "model": "m", "nested": {"a": [1.0, math.nan], "b": math.inf}}])
    first, second = (fields for _, fields in client.xrange("preds:nan"))
    stored = {k.decode(): strict_json(v) for k, v in first.items()}
    assert stored["x"] == 1.5 and stored["output.q"] == 0.5
    assert not {"nan", "big", "output.p"} & set(stored)  # null: left out, as None is
    assert strict_json(second[b"nested"]) == {"a": [1.0, None], "b": None}
    client.close()


def test_the_stream_is_capped_near_maxlen(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    sink = RedisStreamSink(client, "preds:b", maxlen=100)
    for start in range(0, 2_000, 200):
        sink.write([{"request_id": str(i), "model": "m", "x": float(i)} for i in range(start, start + 200)])
    length = client.xlen("preds:b")
    assert 100 <= length < 400  # MAXLEN ~ trims whole radix-tree nodes
    last = client.xrevrange("preds:b", count=1)[0][1]
    assert json.loads(last[b"x"]) == 1999.0
    client.close()


def test_a_sink_made_from_a_url_closes_its_client(redis_url: str) -> None:
    sink = RedisStreamSink(redis_url, "preds:c")
    sink.write([{"request_id": "1", "model": "m"}])
    sink.close()
    assert redis.Redis.from_url(redis_url).xlen("preds:c") == 1


def test_redis_down_is_counted_not_raised(redis_url: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    registry = CollectorRegistry()
    with PredictionLog(RedisStreamSink(client, "preds:d"), registry=registry) as log:
        assert log.log("m", {"x": 1}) is not None
    assert registry.get_sample_value("aiwatch_prediction_log_records_total",
                                     {"log": "predictions", "result": "failed"}) == 1


def test_a_forked_child_logs_through_its_own_connections_and_the_parent_keeps_its_own(redis_url: str) -> None:
    # gunicorn --preload: the log and its sink (a client made from the URL) are made in the master, which has
    # written through a pooled connection before the fork; redis-py gives the child new connections (its pool's pid)
    registry = CollectorRegistry()
    log = PredictionLog(RedisStreamSink(redis_url, "preds:forked"), batch_size=1, registry=registry)
    try:
        log.log("parent", {"x": 1})
        assert log.flush(timeout=HANG)

        def log_in_the_child() -> bool:
            for i in range(2):
                log.log("child", {"x": i})
            written = log.flush(timeout=HANG)
            log.close(timeout=HANG)  # closes the child's client: its connections, not the parent's
            return written

        assert forked_child(log_in_the_child) == "done"
        log.log("parent", {"x": 2})
        assert log.flush(timeout=HANG)
    finally:
        log.close(timeout=HANG)
    client = redis.Redis.from_url(redis_url)
    models = [json.loads(fields[b"model"]) for _, fields in client.xrange("preds:forked")]
    client.close()
    assert sorted(models) == ["child", "child", "parent", "parent"]
    assert registry.get_sample_value("aiwatch_prediction_log_records_total",
                                     {"log": "predictions", "result": "failed"}) == 0
