"""aiwatch.deferred: what finalizers leave to record is recorded by the next scrape or call, each once, and a
failure among it is counted, not raised."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.deferred import run_deferred
from aiwatch.metrics import Metrics


def _errors(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "metrics"}) or 0.0


def test_a_scrape_records_what_was_left_and_shows_it(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.deferred.append(lambda: metrics.child(metrics.unclosed_responses, ("svc",)).inc())
    assert b'aiwatch_unclosed_responses_total{service="svc"} 1.0' in generate_latest(registry)  # the same scrape
    assert not metrics.deferred
    assert registry.get_sample_value("aiwatch_unclosed_responses_total", {"service": "svc"}) == 1  # once


def test_a_failing_work_is_counted_and_the_rest_still_runs(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    ran: list[int] = []

    def fail() -> None:
        raise RuntimeError("a recording that fails")

    metrics.deferred.extend([lambda: ran.append(1), fail, lambda: ran.append(3)])
    run_deferred(metrics)
    assert ran == [1, 3] and not metrics.deferred
    assert _errors(registry) == 1


def test_threads_draining_at_once_run_each_work_once(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    ran: list[int] = []
    metrics.deferred.extend(lambda i=i: ran.append(i) for i in range(20_000))
    start = threading.Barrier(4)

    def drain() -> None:
        start.wait()
        run_deferred(metrics)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ran) == list(range(20_000))


class _RefusingRegistry(CollectorRegistry):
    """A registry that takes aiwatch's metrics but refuses a collector that has none."""

    def register(self, collector: Any) -> None:
        if not collector.describe():
            raise ValueError("no collector without metrics here")
        super().register(collector)


def test_a_registry_that_refuses_the_scrape_hook_still_gets_the_metrics_and_the_next_call_records() -> None:
    registry = _RefusingRegistry()
    metrics = Metrics(registry)
    assert not metrics.unavailable  # every metric is there
    assert _errors(registry) == 1  # the refusal, counted (and logged)
    metrics.deferred.append(lambda: metrics.child(metrics.unclosed_responses, ("svc",)).inc())
    assert registry.get_sample_value("aiwatch_unclosed_responses_total", {"service": "svc"}) is None  # no hook
    run_deferred(metrics)  # what an instrumentation's next call does
    assert registry.get_sample_value("aiwatch_unclosed_responses_total", {"service": "svc"}) == 1
