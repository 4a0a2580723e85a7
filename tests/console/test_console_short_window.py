"""A window shorter than two scrape intervals leaves a rate fewer than two scrapes to compare: the panels say so and
what window to pick, not "No requests in the last 30s" (a false explanation: requests came, the window is too short).
"""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.prometheus import targets_interval
from aiwatch.console.source import DataSource
from tests.console.conftest import run_view, texts
from tests.console.test_console_stopped_traffic import exposition
from tests.servers import prometheus, registry_endpoint, wait_until

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
    # latency, phases, network, links, what the split could not measure, loop delay, loop stood still,
    # throughput, error ratio, phases outside requests
    assert warnings.count(TOO_SHORT) == 10
    warnings, _ = panel_messages(every_30s(), "Alerts")
    assert TOO_SHORT in warnings  # not "aiwatch swallowed no errors in the last 30s" as an all-clear


def test_a_window_of_two_scrape_intervals_draws(window_env: pytest.MonkeyPatch) -> None:
    window_env.setenv("AIWATCH_CONSOLE_WINDOW", "60")
    warnings, infos = panel_messages(every_30s(), "Latency")
    assert not [w for w in warnings if w.startswith("Nothing to show")]
    assert "No requests in the last 1m." not in infos


def target(job: str, instance: str, interval: object) -> dict[str, object]:
    """One of the ``activeTargets`` of Prometheus' ``/api/v1/targets`` (the fields the interval is read from)."""
    return {"labels": {"instance": instance, "job": job}, "scrapeUrl": f"http://{instance}/metrics",
            "health": "up", "scrapeInterval": interval, "scrapeTimeout": "10s"}


NODE = target("node", "10.0.0.9:9100", "5s")
SERVICE = target("aiwatch", "10.0.0.1:8000", "1m")
OTHER_SERVICE = target("aiwatch", "10.0.0.2:8000", "30s")


def test_the_interval_is_the_aiwatch_targets_not_an_unrelated_faster_job() -> None:
    # before: 5.0, the node exporter's interval, whatever exports aiwatch's series
    assert targets_interval([NODE, SERVICE], {("aiwatch", "10.0.0.1:8000")}) == 60.0
    assert targets_interval([NODE, SERVICE, OTHER_SERVICE],
                            {("aiwatch", "10.0.0.1:8000"), ("aiwatch", "10.0.0.2:8000")}) == 30.0


def test_without_a_target_known_to_export_aiwatch_the_interval_is_every_targets() -> None:
    assert targets_interval([NODE, SERVICE], None) == 5.0
    assert targets_interval([NODE, SERVICE], set()) == 5.0
    # series whose job / instance name no target (relabelled, federated): every target's, not None
    assert targets_interval([NODE, SERVICE], {("federate", "10.0.0.1:8000")}) == 5.0


def test_targets_without_a_readable_interval_are_skipped() -> None:
    assert targets_interval([target("aiwatch", "a:1", None), target("aiwatch", "b:1", "soon"), SERVICE],
                            {("aiwatch", "a:1"), ("aiwatch", "b:1"), ("aiwatch", "10.0.0.1:8000")}) == 60.0
    assert targets_interval([target("aiwatch", "a:1", None)], None) is None
    assert targets_interval([], None) is None


def test_prometheus_scraping_every_30s_says_the_window_is_too_short(window_env: pytest.MonkeyPatch) -> None:
    window_env.setenv("AIWATCH_CONSOLE_WINDOW", "30")
    registry = CollectorRegistry()
    Histogram("aiwatch_request_duration_seconds", "requests", ["service"], registry=registry).labels("api").observe(1)
    unrelated = CollectorRegistry()
    Counter("node_cpu_seconds", "not aiwatch's", registry=unrelated).inc()
    with registry_endpoint(registry) as service, registry_endpoint(unrelated) as node:
        # an unrelated job scraped every second by the same Prometheus: the services are still compared every 30 s
        node_job = f"  - job_name: node\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{node}']\n"
        with prometheus([service], scrape_interval="30s", extra_config=node_job) as prom:
            src = PrometheusSource(prom.url, span=60, points=30)
            # Prometheus spreads a target's first scrape over its interval: up to 30 s here
            wait_until(lambda: [t.up for t in src.health()] == [True, True], 45, what="the first scrapes")
            warnings, infos = panel_messages(src, "Latency")
            assert "No requests in the last 30s." not in infos
            assert TOO_SHORT in warnings
            # the aiwatch job's scrapeInterval in /api/v1/targets; before: 1.0, the node job's
            assert src.scrape_interval() == 30.0


def latency_warnings(source: DataSource, service: str) -> list[str]:
    """The warnings of the Latency view with ``service`` picked in its Service box."""
    from streamlit.testing.v1 import AppTest

    from tests.console.conftest import APP

    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["aiwatch_source"] = source
    at.session_state["view"] = "Latency"
    at.session_state["latency_service"] = service
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="latency_service").value == service
    return texts(at.warning)


def test_the_note_uses_the_scrape_interval_of_the_selected_services_targets(window_env: pytest.MonkeyPatch) -> None:
    # a window of 45 s: a rate of the service scraped every 30 s has two scrapes in it half of the time (so it is one
    # of the services to pick), and nothing at other times, and its panels without data stay empty
    window_env.setenv("AIWATCH_CONSOLE_WINDOW", "45")
    slow, fast = CollectorRegistry(), CollectorRegistry()
    Histogram("aiwatch_request_duration_seconds", "requests", ["service"], registry=slow).labels("api").observe(1)
    Histogram("aiwatch_request_duration_seconds", "requests", ["service"], registry=fast).labels("batch").observe(1)
    with registry_endpoint(slow) as api, registry_endpoint(fast) as batch:
        # another aiwatch service scraped every second by the same Prometheus
        batch_job = f"  - job_name: batch\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{batch}']\n"
        with prometheus([api], scrape_interval="30s", extra_config=batch_job) as prom:
            src = PrometheusSource(prom.url, span=120, points=120)
            # two scrapes of api: the first is spread over its interval, up to 30 s, the second 30 s later
            wait_until(lambda: any(s.labels.get("service") == "api" for s in src.throughput(45.0)), 120,
                       what="a rate of api's requests")
            assert src.scrape_interval() == 1.0  # no service picked: the shortest of every aiwatch target
            # before: 1.0, the batch job's interval, whichever service is picked
            assert src.scrape_interval("api") == 30.0
            assert src.scrape_interval("batch") == 1.0
            note = TOO_SHORT.replace("over 30s", "over 45s")
            assert note in latency_warnings(src, "api")
            assert not [w for w in latency_warnings(src, "All services") if w.startswith("Nothing to show")]
