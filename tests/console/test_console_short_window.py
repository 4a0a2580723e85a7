"""A window shorter than two scrape intervals leaves a rate fewer than two scrapes to compare: the panels say so and
what window to pick, not "No requests in the last 30s" (a false explanation: requests came, the window is too short).
"""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram, start_http_server

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.source import DataSource
from tests.console.conftest import run_view, texts
from tests.console.test_console_stopped_traffic import exposition
from tests.servers import prometheus, wait_until

URL = "http://127.0.0.1:9/metrics"
TOO_SHORT = ("Nothing to show over 30s: the window is shorter than two scrape intervals (the targets are scraped every "
             "30s), so a rate has fewer than two scrapes in it to compare, whatever the traffic. Pick a window of 2m "
             "or more (four scrape intervals).")


@pytest.fixture
def window_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in [v for v in os.environ if v.startswith("AIWATCH_CONSOLE_")]:
        monkeypatch.delenv(var)
    return monkeypatch


def every_30s() -> ScrapeSource:
    """A scrape source fed four scrapes 30 s apart of a service serving 10 requests a second."""
    src = ScrapeSource([URL], interval=30.0, history=600, start=False)
    now = time.time()
    for i in range(4):
        src.record(URL, exposition({"api": 300 * i}), ts=now - 90 + 30 * i)
    return src


def panel_messages(source: DataSource, view: str) -> tuple[list[str], list[str]]:
    at = run_view(source, view)
    return texts(at.warning), texts(at.info)


def test_a_window_of_one_scrape_interval_says_it_is_too_short(window_env: pytest.MonkeyPatch) -> None:
    window_env.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    warnings, infos = panel_messages(every_30s(), "Latency")
    # before: "No requests in the last 30s." (and the like) in every rate panel
    assert not [i for i in infos if "in the last 30s" in i]
    assert warnings.count(TOO_SHORT) == 6  # latency, phases, network, links, throughput, error ratio
    warnings, _ = panel_messages(every_30s(), "Alerts")
    assert TOO_SHORT in warnings  # not "aiwatch swallowed no errors in the last 30s" as an all-clear


def test_a_window_of_two_scrape_intervals_draws(window_env: pytest.MonkeyPatch) -> None:
    window_env.setenv("AIWATCH_CONSOLE_WINDOW", "60")
    warnings, infos = panel_messages(every_30s(), "Latency")
    assert not [w for w in warnings if w.startswith("Nothing to show")]
    assert "No requests in the last 1m." not in infos


def test_prometheus_scraping_every_30s_says_the_window_is_too_short(window_env: pytest.MonkeyPatch) -> None:
    window_env.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    registry = CollectorRegistry()
    Histogram("aiwatch_request_duration_seconds", "requests", ["service"], registry=registry).labels("api").observe(1)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with prometheus([f"127.0.0.1:{server.server_port}"], scrape_interval="30s") as prom:
            src = PrometheusSource(prom.url, span=60, points=30)
            # Prometheus spreads a target's first scrape over its interval: up to 30 s here
            wait_until(lambda: [t.up for t in src.health()] == [True], 45, what="the first scrape")
            warnings, infos = panel_messages(src, "Latency")
            assert "No requests in the last 30s." not in infos
            assert TOO_SHORT in warnings
            assert src.scrape_interval() == 30.0  # the targets' scrapeInterval in /api/v1/targets
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
