"""aiwatch.deferred: what finalizers leave to record is recorded by the next scrape or call, each once, and a
failure among it is counted, not raised."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from aiwatch import deferred
from aiwatch.deferred import PER_CALL, run_deferred
from aiwatch.exposition import serving_registry, start_http_server
from aiwatch.metrics import Metrics


def _errors(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "metrics"}) or 0.0


def test_a_scrape_records_what_was_left_and_shows_it(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    metrics.deferred.append(lambda: metrics.child(metrics.unclosed_responses, ("svc",)).inc())
    assert b'aiwatch_unclosed_responses_total{service="svc"} 1.0' in generate_latest(registry)  # the same scrape
    assert not metrics.deferred
    assert registry.get_sample_value("aiwatch_unclosed_responses_total", {"service": "svc"}) == 1  # once


def test_a_scrape_of_some_names_records_what_was_left_too(registry: CollectorRegistry,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``/metrics?name[]=...`` (a scrape config's params): prometheus_client's restricted registry collects only the
    collectors that describe a name asked for, and RunDeferredOnScrape describes none. The dropped response (and
    the scrape checks) waited for a full scrape or the next request, which an idle process never gets."""
    ran: list[int] = []
    monkeypatch.setattr(deferred, "_scrape_checks", [lambda: ran.append(1)])
    metrics = Metrics(registry)
    server, thread = start_http_server(0, registry=registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics?name[]=aiwatch_unclosed_responses_total"
        metrics.deferred.append(lambda: metrics.child(metrics.unclosed_responses, ("svc",)).inc())
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        thread.join()
    assert 'aiwatch_unclosed_responses_total{service="svc"} 1.0' in body  # the same scrape shows it
    assert "aiwatch_requests_in_flight" not in body  # still restricted to the names asked for
    assert not metrics.deferred and len(ran) == 1


def test_each_scrape_runs_the_scrape_checks_once(registry: CollectorRegistry, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The at_scrape checks (the event-loop samplers' retire_closed) run from two collectors, a registry's
    RunDeferredOnScrape and multiprocess mode's merged view: a scrape of either runs them once, not once per
    collector the process has."""
    ran: list[int] = []
    monkeypatch.setattr(deferred, "_scrape_checks", [lambda: ran.append(1)])
    Metrics(registry)
    generate_latest(registry)
    assert len(ran) == 1
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    merged = serving_registry()
    assert merged is not REGISTRY  # the merged view: its own collector, which runs run_every_deferred
    generate_latest(merged)
    assert len(ran) == 2


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


def test_a_limit_runs_that_many_oldest_first(registry: CollectorRegistry) -> None:
    metrics = Metrics(registry)
    ran: list[int] = []
    metrics.deferred.extend(lambda i=i: ran.append(i) for i in range(5))
    run_deferred(metrics, 3)
    assert ran == [0, 1, 2] and len(metrics.deferred) == 2
    run_deferred(metrics, 0)
    assert len(metrics.deferred) == 2


def _burst(metrics: Metrics, size: int) -> None:
    """What a collection freeing ``size`` dropped responses at once leaves."""
    metrics.deferred.extend(lambda: metrics.child(metrics.unclosed_responses, ("burst",)).inc() for _ in range(size))


def _unclosed(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("aiwatch_unclosed_responses_total", {"service": "burst"})


def test_a_wsgi_request_records_at_most_its_share_of_a_burst_and_a_scrape_the_rest(registry: CollectorRegistry
                                                                                     ) -> None:
    from wsgiref.util import setup_testing_defaults

    import aiwatch

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    mw = aiwatch.instrument(app, registry=registry, service="svc")
    _burst(mw.metrics, 1000)
    environ: dict[str, Any] = {"PATH_INFO": "/x"}
    setup_testing_defaults(environ)
    body = mw(environ, lambda status, headers, exc_info=None: None)
    assert len(mw.metrics.deferred) == 1000 - PER_CALL  # the request paid for its share only
    body.close()  # type: ignore[attr-defined]
    assert _unclosed(registry) == 1000  # the scrape recorded the rest
    assert not mw.metrics.deferred


def test_a_client_call_records_at_most_its_share_of_a_burst(registry: CollectorRegistry) -> None:
    import httpx

    import aiwatch.client

    metrics = Metrics(registry)
    _burst(metrics, 1000)
    transport = aiwatch.client.AiwatchTransport(httpx.MockTransport(lambda request: httpx.Response(200)),
                                                metrics=metrics, service="gw")
    with httpx.Client(transport=transport) as client:
        assert client.get("http://peer/x").status_code == 200
    assert len(metrics.deferred) == 1000 - PER_CALL
