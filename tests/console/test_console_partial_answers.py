"""Answers Prometheus marks as incomplete (a remote-read store that failed; Thanos' and Mimir's partial responses
carry the same ``warnings``): the console says so above the panels, on a real Prometheus whose remote-read store is
down."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from aiwatch.console.prometheus import PrometheusSource
from aiwatch.promapi import PrometheusAPI
from tests.console.conftest import Stack, expected_warnings, run_view, source_warnings, texts
from tests.servers import Prometheus, free_port, prometheus

NOTICE = "Prometheus warned that its answers may be incomplete"


def remote_read_to(port: int) -> str:
    return f"remote_read:\n  - url: http://127.0.0.1:{port}/read\n    read_recent: true\n    remote_timeout: 2s\n"


@pytest.fixture(scope="module")
def partial_prometheus(stack: Stack) -> Iterator[Prometheus]:
    """A second Prometheus scraping the console workload, whose remote-read store is down: every query answers
    with its local data and a warning."""
    with prometheus([stack.service["target"]], extra_config=remote_read_to(free_port())) as prom:
        prom.wait_for("sum(rate(aiwatch_request_duration_seconds_count[5s])) > 0")
        yield prom


def test_the_api_keeps_each_distinct_warning_of_its_answers(partial_prometheus: Prometheus) -> None:
    api = PrometheusAPI(partial_prometheus.url, timeout=10)
    started = time.monotonic()
    assert api.query("sum(aiwatch_request_duration_seconds_count)")  # the local data is still answered
    api.query("up")
    kept = api.warnings_since(started)
    assert len(kept) == 1 and kept[0].startswith("remote_read: ") and "connection refused" in kept[0]
    assert api.warnings_since(time.monotonic() + 1) == []


def test_a_complete_answer_keeps_no_warning(stack: Stack) -> None:
    api = PrometheusAPI(stack.prom.url, timeout=10)
    started = time.monotonic()
    assert api.query("sum(aiwatch_request_duration_seconds_count)")
    assert api.warnings_since(started) == []


@pytest.mark.slow
def test_the_console_says_its_panels_may_rest_on_part_of_the_data(partial_prometheus: Prometheus,
                                                                  console_env: None) -> None:
    src = PrometheusSource(partial_prometheus.url, span=60, points=30, timeout=10)
    at = run_view(src, "Latency")
    shown = [w for w in texts(at.warning) if w.startswith(NOTICE)]
    assert len(shown) == 1 and "remote_read: " in shown[0], texts(at.warning)


@pytest.mark.slow
def test_the_console_says_nothing_of_the_kind_when_the_answers_are_complete(settled_source: PrometheusSource,
                                                                             console_env: None) -> None:
    at = run_view(settled_source, "Latency")
    assert source_warnings(at) == expected_warnings(settled_source)  # the workload's starved loop's aside
