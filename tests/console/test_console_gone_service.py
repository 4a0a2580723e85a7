"""A service whose every replica is gone (its targets down, its series no longer scraped): its rate series end,
and their last value is from before. Its tiles (the latest p50 / p95 / p99, time per request, a traffic class's
p95) say there is no value now instead of showing that last one as current, next to a service still serving; and
when every service is gone, every tile does. A real Prometheus scrapes two real endpoints, one shut down, then both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.metrics import Metrics
from tests.console.conftest import console_window, run_view
from tests.console.endpoints import live_endpoint
from tests.servers import prometheus, wait_until

pytestmark = pytest.mark.slow

WINDOW = 2
STEP = 1.0
"""The range step of the source below (a span of 60 s in 60 points)."""
AGE = STEP + 1.0
"""How far behind its answer's latest point a series may end and still be current: the step, and a second for the
range's end rounded (PrometheusSource.latest_point_age); and that one behind now, a window more (a source fed late)."""


@contextmanager
def serving(service: str) -> Iterator[tuple[str, threading.Event]]:
    """A real /metrics endpoint of ``service`` serving 10 requests a second of 50 ms (20 ms of them in the model);
    yields its ``host:port`` and an event that stops it (its server shut down: its target goes down)."""
    def traffic(m: Metrics) -> None:
        m.request_duration.labels(service, "/predict", "POST", "200", "realtime").observe(0.05)
        m.phase_duration.labels(service, "m", "", "inference").observe(0.02)
        m.phase_duration.labels(service, "m", "", "overhead").observe(0.03)

    with live_endpoint(traffic) as (port, stopped):
        yield f"127.0.0.1:{port}", stopped


def tiles(source: PrometheusSource | ScrapeSource, view: str) -> list[tuple[str, str]]:
    return [(m.label, m.value) for m in run_view(source, view).metric]


def test_the_tiles_of_a_service_whose_replicas_are_gone_show_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    console_window(monkeypatch, str(WINDOW))
    rate = f"sum by (service) (rate(aiwatch_request_duration_seconds_count[{WINDOW}s]))"
    with serving("api") as (api, stop_api), serving("gone") as (gone, stop_gone), \
            prometheus([api, gone]) as prom:
        prom.wait_for(rate, lambda found: len(found) == 2)
        source = PrometheusSource(prom.url, span=60, points=60)
        assert [v for _, v in tiles(source, "Latency")].count("—") == 0

        stop_gone.set()
        prom.wait_for(rate, lambda found: [s["metric"]["service"] for s in found] == ["api"])
        # the last point of gone's rate is now more than latest_point_age behind the answer's latest (the latency
        # view reads both services from one answer), by a step more: the points' times move with the query's end
        wait_until(lambda: all(
            s.points[-1][0] < max(t.points[-1][0] for t in found) - AGE - STEP
            for found in [source.throughput(WINDOW)] for s in found if s.labels["service"] == "gone"), 30,
            what="gone's rate series ended a step before api's")
        latency = tiles(source, "Latency")
        # api's tiles, then gone's (the services in name order)
        assert [v for _, v in latency[:3]].count("—") == 0, latency
        assert latency[3:6] == [("request p50", "—"), ("request p95", "—"), ("request p99", "—")], latency
        assert [v for _, v in latency[6:9]].count("—") == 0, latency
        assert latency[9:12] == [("time per request", "—"), ("model time", "—"), ("model share", "—")], latency
        classes = tiles(source, "AI traffic")
        assert classes[0][1] != "—" and classes[3] == ("realtime p95", "—"), classes

        stop_api.set()
        prom.wait_for(rate, lambda found: not found)
        wait_until(lambda: max(s.points[-1][0] for s in source.throughput(WINDOW))
                   < time.time() - AGE - STEP - WINDOW, 30, what="every rate series ended")
        latency = tiles(source, "Latency")
        assert {v for _, v in latency} == {"—"}, latency
