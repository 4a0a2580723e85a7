"""Replicas up with no real-time request since they started (a quiet night, or only batch traffic): the console's
"real-time request rate per replica" is 0, as ``service:aiwatch_requests_per_replica:rate5m`` reads it, not "no
data". A real endpoint exporting the serving gauges and only batch requests, read by a real Prometheus and by the
console's own scraper."""

from __future__ import annotations

import pytest

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.source import DataSource
from aiwatch.metrics import Metrics
from tests.console.endpoints import live_endpoint
from tests.servers import prometheus, wait_until

pytestmark = pytest.mark.slow

RATE = "real-time request rate per replica"


def batch_only(m: Metrics) -> None:
    m.request_duration.labels("api", "/v1/bulk", "POST", "200", "batch").observe(0.05)
    m.requests_in_flight.labels("api").set(0)


def request_rate(source: DataSource) -> float | None:
    (signal,) = [s for s in source.autoscaling_signals(5) if s.name == RATE]
    return signal.value


def test_replicas_up_without_real_time_requests_read_zero_requests_per_replica() -> None:
    with live_endpoint(batch_only) as (port, _), prometheus([f"127.0.0.1:{port}"]) as prom:
        scraper = ScrapeSource([f"http://127.0.0.1:{port}/metrics"], interval=0.25, history=60, timeout=5.0)
        try:
            prom.wait_for('rate(aiwatch_request_duration_seconds_count{traffic_class="batch"}[5s]) > 0')
            wait_until(lambda: request_rate(scraper) is not None, 30, what="the scraper's rate")
            assert request_rate(scraper) == 0.0
            assert request_rate(PrometheusSource(prom.url)) == 0.0
        finally:
            scraper.close()
