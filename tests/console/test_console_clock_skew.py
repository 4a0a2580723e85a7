"""The console on a machine whose clock runs ahead of Prometheus' (no NTP in a container, a VM resumed): its questions
of now are asked at Prometheus' now, where its samples end. This machine's clock is set ahead where aiwatch reads it
(``aiwatch.clock.wall``); Prometheus and the service are real."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from aiwatch import clock
from aiwatch.console import PrometheusSource, ScrapeSource
from aiwatch.console.source import DataSource
from tests.console.conftest import WINDOW, Stack, run_view, texts
from tests.console.test_console_prediction_log import RECOVERY_BANNER
from tests.console.workload import serve
from tests.servers import prometheus, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("console_env")]

AHEAD = 30.0


def latency_tiles(src: PrometheusSource) -> list[tuple[str, str]]:
    return [(m.label, m.value) for m in run_view(src, "Latency").metric if m.label.startswith("request p")]


def test_a_clock_ahead_of_prometheus_still_shows_the_traffic_of_now(stack: Stack,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    level = latency_tiles(PrometheusSource(stack.prom.url, span=60, points=30))
    assert level and all(value != "—" for _, value in level), level

    monkeypatch.setattr(clock, "wall", lambda: time.time() + AHEAD)
    src = PrometheusSource(stack.prom.url, span=60, points=30)
    # the last 30 s of each chart were asked where Prometheus had no samples yet (rates over a 5 s window of
    # nothing: no point there), so every series ended 30 s before now, longer ago than the window, as a service's
    # that stopped: each tile said there was no value now
    rates = src.throughput(WINDOW)
    assert rates and all(s.points[-1][0] >= src.now() - 2 * src.latest_point_age() for s in rates), \
        [(s.labels, s.points[-1][0] - src.now()) for s in rates]
    ahead = latency_tiles(src)
    assert [label for label, _ in ahead] == [label for label, _ in level]
    assert all(value != "—" for _, value in ahead), ahead


def test_a_recovery_minutes_old_stays_red_on_a_console_whose_clock_runs_hours_ahead(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journals the workload's sink tore or set aside at its start, counted minutes ago: the banner compared their
    time with this machine's clock, two hours ahead, and showed them as counted over an hour ago (the yellow
    warning), while AiwatchPredictionLogRecoveryIncomplete fired. It reads Prometheus' now."""
    monkeypatch.setattr(clock, "wall", lambda: time.time() + 2 * 3600.0)
    src = PrometheusSource(stack.prom.url, span=60, points=30)
    wait_until(lambda: any(r.last for r in src.prediction_log_recovery()), 20, what="journal recovery times")
    at = run_view(src, "Drift")
    red = [t for t in texts(at.error) if t.startswith(RECOVERY_BANNER)]
    assert len(red) == 1, (texts(at.error), texts(at.warning))
    banner = red[0]
    assert re.search(r"1 torn \(last (under a minute|\d+ min) ago\)", banner), banner
    assert not [t for t in texts(at.warning) if t.startswith("Prediction log journals not recovered, last counted")]


def test_a_recovery_minutes_old_stays_red_when_the_apps_clock_runs_hours_behind_prometheus() -> None:
    """The app's sink stamps aiwatch_prediction_log_recovery_last_timestamp_seconds on its host's clock, here two
    hours behind Prometheus' (and this machine's): the banner read the journals torn and set aside at its start,
    minutes ago, as counted two hours ago (the yellow warning) while AiwatchPredictionLogRecoveryIncomplete, which
    times its window by when Prometheus saw the value change, fired. It reads when Prometheus first saw the count."""
    with serve(features=2, gpus=0, interval=0.2, clock_offset=-2 * 3600.0) as svc, prometheus([svc["target"]]) as prom:
        at = recovery_view(PrometheusSource(prom.url, span=60, points=30))
    assert_recent_recovery(at)


def test_the_scrape_source_moves_a_recovery_time_onto_its_clock_by_the_apps_date_header() -> None:
    """The embedded scraper read the stamp of an app host two hours behind against its own clock (the yellow
    warning, 'last 2 h ago'); the Date of the app's answers shows how far behind its clock runs."""
    with serve(features=2, gpus=0, interval=0.2, clock_offset=-2 * 3600.0) as svc:
        src = ScrapeSource([svc["url"]], interval=0.25, history=30, timeout=5.0)
        try:
            at = recovery_view(src)
        finally:
            src.close()
    assert_recent_recovery(at)


def recovery_view(src: DataSource) -> Any:
    wait_until(lambda: any(r.last for r in src.prediction_log_recovery()), 20, what="journal recovery times")
    return run_view(src, "Drift")


def assert_recent_recovery(at: Any) -> None:
    red = [t for t in texts(at.error) if t.startswith(RECOVERY_BANNER)]
    assert len(red) == 1, (texts(at.error), texts(at.warning))
    assert re.search(r"1 torn \(last (under a minute|\d+ min) ago\)", red[0]), red[0]
    assert not [t for t in texts(at.warning) if t.startswith("Prediction log journals not recovered, last counted")]
