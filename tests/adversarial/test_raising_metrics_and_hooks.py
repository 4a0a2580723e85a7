"""Metrics and hooks that raise: aiwatch counts and logs its own failures and the app's results never change.

The HTTP and gRPC paths have their own such tests (tests/http/test_http_faults.py, tests/grpc/test_grpc_faults.py);
this file covers the start-up (metrics that cannot be created) and the signals (queues, caches, the batcher, the
drift monitor).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from flask import Flask
from prometheus_client import CollectorRegistry, Counter, Histogram

import aiwatch
from aiwatch import safety
from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.feedback import ParquetSink, PredictionLog
from aiwatch.metrics import Metrics
from tests.http.asgi_driver import call


@pytest.fixture(autouse=True)
def _fresh_burst_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safety, "_burst", safety._BurstLog(burst_seconds=3600))


def errors(registry: CollectorRegistry, component: str) -> float:
    return registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": component}) or 0.0


def fastapi_app() -> FastAPI:
    api = FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        with aiwatch.phase("inference"):
            return {"id": item_id}

    return api


def flask_app() -> Flask:
    app = Flask("startup")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        with aiwatch.phase("inference"):
            return {"id": item_id}

    return app


def serve_one(app: Any) -> tuple[int, bytes]:
    if isinstance(app, Flask):
        resp = app.test_client().get("/items/7", buffered=True)
        return resp.status_code, resp.data.replace(b" ", b"").strip()
    got = asyncio.run(call(app, "/items/7"))
    return got.status, got.body


# --- start-up: a metric that cannot be created -------------------------------------------------------------------
@pytest.mark.parametrize("make_app", [fastapi_app, flask_app], ids=["asgi", "wsgi"])
def test_instrument_on_a_registry_where_a_metric_name_is_taken_still_serves(
        make_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")
    registry = CollectorRegistry()
    # the app (or another library) already owns this name: creating aiwatch's histogram raises
    Histogram("aiwatch_request_duration_seconds", "someone else's", registry=registry)
    app = aiwatch.instrument(make_app(), registry=registry, service="svc")
    assert serve_one(app) == (200, b'{"id":7}')
    # the rest of aiwatch still records
    assert registry.get_sample_value("aiwatch_phase_duration_seconds_count",
                                     {"model_version": "", "service": "svc", "model": "", "phase": "inference"}) == 1.0
    assert errors(registry, "metrics") == 1.0
    logged = [r.getMessage() for r in caplog.records if "metrics failed" in r.getMessage()]
    assert len(logged) == 1 and "aiwatch_request_duration_seconds" in logged[0]


def test_instrument_on_a_registry_that_refuses_every_metric_still_serves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")

    class Refusing(CollectorRegistry):
        def register(self, collector: Any) -> None:
            raise RuntimeError("registry is read-only")

    app = aiwatch.instrument(fastapi_app(), registry=Refusing(), service="svc")
    assert serve_one(app) == (200, b'{"id":7}')
    assert any("could not be created" in r.getMessage() for r in caplog.records)


def test_the_error_counter_itself_taken_is_logged() -> None:
    registry = CollectorRegistry()
    Counter("aiwatch_instrumentation_errors", "someone else's", ["component"], registry=registry)
    metrics = Metrics(registry)
    assert set(metrics.unavailable) == {"aiwatch_instrumentation_errors_total"}
    metrics.child(metrics.instrumentation_errors, ("x",)).inc()  # records nothing, raises nothing


# --- signals: every metric they write raises -----------------------------------------------------------------------
class _Raising:
    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"metric backend down ({name})")

        return fail


class RaisingMetrics(Metrics):
    """Every child raises on use; only the error and overflow counters work."""

    def child(self, metric: Any, labels: Any) -> Any:
        if metric is self.instrumentation_errors or metric is self.label_overflow:
            return super().child(metric, labels)
        return _Raising()


def test_queues_with_raising_metrics_pass_every_item(caplog: pytest.LogCaptureFixture) -> None:
    metrics = RaisingMetrics(CollectorRegistry())
    q = aiwatch.instrument_queue(queue.Queue(), "jobs", metrics=metrics)
    for i in range(20):
        q.put(i)
    assert [q.get() for _ in range(20)] == list(range(20))
    assert errors(metrics.registry, "queue") == 1 + 40  # instrumenting, then each put and get
    # undone here, not left to its finalizer: the caught errors' tracebacks keep the queue in reference cycles, and a
    # later collection can run its finalizer inside an ast.parse. The finalizer's failure is logged with a traceback,
    # which CPython 3.11 formats with ast.parse: parsing inside a parse left the AST constructor's depth off for good,
    # and every later parse in the process (pytest's rewrite of an import) raised SystemError (gh-106905)
    aiwatch.uninstrument_queue(q)
    assert errors(metrics.registry, "queue") == 1 + 40 + 1  # the depth gauge's release


def test_a_queue_finalizer_failing_while_a_failure_is_being_logged_does_not_hang_the_thread() -> None:
    """A garbage collection can run anywhere an object is allocated, so also inside aiwatch's rate limiter of its
    own logs, while it holds its lock. A collected instrumented queue's finalizer then takes its share out of the
    depth gauge; when that fails, it records the failure, in the same thread. With a plain lock that thread waited
    for ever (seen on Python 3.13 as a test stuck until pytest-timeout). Here the collection happens at a chosen
    point inside the rate limiter's block."""
    from aiwatch.signals.queues import _MARK

    metrics = RaisingMetrics(CollectorRegistry())  # the finalizer's gauge decrement raises
    q = aiwatch.instrument_queue(queue.Queue(), "jobs", metrics=metrics)
    q.put(1)
    # the queue's weakref.finalize, run as a collection would run it (a failed put's logged traceback keeps the
    # queue itself alive here, so dropping it would not collect it)
    finalizer = getattr(q, _MARK).finalizer
    burst = safety._burst

    class CollectingOnRead(dict):  # type: ignore[type-arg]
        def get(self, key: Any, default: Any = None) -> Any:
            if finalizer.alive:
                finalizer()  # inside the rate limiter's block, in this thread
            return super().get(key, default)

    burst._last = CollectingOnRead()
    done: list[bool] = []
    worker = threading.Thread(target=lambda: (safety.record_error("cache", RuntimeError("outer"), metrics),
                                              done.append(True)), daemon=True)
    worker.start()
    worker.join(60)  # a deadlock, not a slow run: the thread never finishes
    assert done == [True]
    assert errors(metrics.registry, "cache") == 1
    assert not finalizer.alive
    assert errors(metrics.registry, "queue") == 1 + 1 + 1  # instrumenting, the put, and the finalizer's release


def test_feature_cache_with_raising_metrics_and_hooks_returns_the_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")
    metrics = RaisingMetrics(CollectorRegistry())
    cache = aiwatch.FeatureCache("users", metrics=metrics)

    def is_hit(value: Any) -> bool:
        raise RuntimeError("user hook broke")

    @cache.wrap(is_hit=is_hit)
    def load(key: int) -> int:
        return key * 2

    local = aiwatch.instrument_mapping({"a": 1}, cache="local", metrics=metrics)
    assert [load(i) for i in range(10)] == [i * 2 for i in range(10)]
    assert local["a"] == 1 and local.get("b") is None
    with pytest.raises(KeyError):
        local["b"]
    assert errors(metrics.registry, "cache") == 10 * 2 + 3  # hook + metric per load, a metric per lookup
    logged = [r.getMessage() for r in caplog.records]
    for name in ("users", "local"):  # logged once per burst and cache
        assert len([m for m in logged if f"cache {name!r} failed" in m]) == 1, logged


async def test_batcher_with_raising_metrics_returns_every_result() -> None:
    metrics = RaisingMetrics(CollectorRegistry())

    async def double(items: list[int]) -> list[int]:
        return [2 * x for x in items]

    async with aiwatch.MicroBatcher(double, max_batch_size=4, max_wait_seconds=0, metrics=metrics) as b:
        assert await asyncio.gather(*(b.submit(i) for i in range(16))) == [2 * i for i in range(16)]
    assert errors(metrics.registry, "batcher") > 0


# --- which one failed: several queues, caches, monitors, prediction logs in one process -----------------------------
def failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = (r.getMessage() for r in caplog.records)
    return [m.split(":", 2)[1].strip() for m in messages if "failed and was skipped" in m]


def test_the_failure_log_line_names_the_queue_that_failed(caplog: pytest.LogCaptureFixture) -> None:
    # before: "aiwatch: queue failed and was skipped: RuntimeError(...)" for either queue, and only the first one's
    # line (the same component and exception type shared one burst): the SRE could not tell which queue's depth was off
    caplog.set_level(logging.WARNING, logger="aiwatch")
    metrics = RaisingMetrics(CollectorRegistry())
    jobs = aiwatch.instrument_queue(queue.Queue(), "jobs", metrics=metrics)
    batches = aiwatch.instrument_queue(queue.Queue(), "batches", metrics=metrics)
    for q in (jobs, batches):
        q.put(1)
        q.get()
        aiwatch.uninstrument_queue(q)
    assert failure_lines(caplog) == ["queue 'jobs' failed and was skipped", "queue 'batches' failed and was skipped"]
    assert errors(metrics.registry, "queue") == 2 * (1 + 2 + 1)  # the counter's labels unchanged: component only


def test_the_failure_log_line_names_the_feature_cache_that_failed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")
    metrics = Metrics(CollectorRegistry())
    for name in ("users", "items"):
        aiwatch.FeatureCache(name, metrics=metrics).record(float("nan"), hits=1)  # a lookup time that is no time
    assert failure_lines(caplog) == ["cache 'users' failed and was skipped", "cache 'items' failed and was skipped"]
    assert errors(metrics.registry, "cache") == 2


def test_the_failure_log_line_names_the_model_of_the_drift_monitor_that_failed(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")
    metrics = Metrics(CollectorRegistry())
    profile = ReferenceProfile.build({"x": np.random.default_rng(0).normal(size=500)})
    for model in ("ranker", "scorer"):
        DriftMonitor(profile, model=model, metrics=metrics, window_size=200).observe([1.0])  # type: ignore[arg-type]
    assert failure_lines(caplog) == ["drift of model 'ranker' failed and was skipped",
                                     "drift of model 'scorer' failed and was skipped"]
    assert errors(metrics.registry, "drift") == 2


def test_the_failure_log_line_names_the_prediction_log_and_where_it_writes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # two logs of the default name (the log label) writing to two directories: the line says which directory
    caplog.set_level(logging.WARNING, logger="aiwatch")
    metrics = Metrics(CollectorRegistry())

    class Unreadable(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("a mapping that cannot be read")

    for folder in ("a", "b"):
        with PredictionLog(ParquetSink(tmp_path / folder), metrics=metrics) as log:
            assert log.log("m", Unreadable(x=1)) is None
    assert failure_lines(caplog) == [f"prediction_log 'predictions' (into {tmp_path / 'a'}) failed and was skipped",
                                     f"prediction_log 'predictions' (into {tmp_path / 'b'}) failed and was skipped"]
    assert errors(metrics.registry, "prediction_log") == 2


def test_the_bursts_named_by_instance_leave_room_for_new_exception_types(caplog: pytest.LogCaptureFixture) -> None:
    # queues made from data (one per tenant) each open a burst of their own, up to half the table, then share their
    # type's (whose one line names the queue that opened it): a new exception type of another component still gets
    # a burst (a line) of its own after them
    caplog.set_level(logging.WARNING, logger="aiwatch")
    for i in range(safety.MAX_BURST_KINDS * 2):
        safety.errors_of("queue", f"'tenant-{i}'")(RuntimeError("gauge down"))
    assert len(failure_lines(caplog)) == safety.MAX_BURST_KINDS // 2 + 1
    assert failure_lines(caplog)[-1] == f"queue 'tenant-{safety.MAX_BURST_KINDS // 2}' failed and was skipped"
    safety.record_error("cache", KeyError("new"))
    assert failure_lines(caplog)[-1] == "cache failed and was skipped"


def test_drift_monitor_with_raising_metrics_never_raises_into_observe() -> None:
    metrics = RaisingMetrics(CollectorRegistry())
    rng = np.random.default_rng(0)
    profile = ReferenceProfile.build({"x": rng.normal(size=500), "c": ["a", "b"] * 250})
    monitor = DriftMonitor(profile, model="m", metrics=metrics, window_size=200, flush_every=10)
    for i in range(50):
        monitor.observe({"x": float("nan") if i % 5 == 0 else float(i), "c": 3, "unknown": i})
    monitor.observe_batch({"x": rng.normal(size=100), "c": ["a"] * 100})
    assert monitor.evaluate().features["x"].current_count > 0
    assert errors(metrics.registry, "drift") > 0


def test_instrument_with_metrics_whose_labels_raise_still_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics(CollectorRegistry())

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("labels() broke")

    monkeypatch.setattr(metrics.requests_in_flight, "labels", broken)
    app = aiwatch.instrument(fastapi_app(), metrics=metrics, service="svc")  # its recorder asks for in-flight now
    assert serve_one(app) == (200, b'{"id":7}')
    assert errors(metrics.registry, "metrics") == 1
