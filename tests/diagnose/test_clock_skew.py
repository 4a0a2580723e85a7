"""``aiwatch diagnose`` on a machine whose clock runs ahead of Prometheus' or behind it (no NTP in a container, a VM
resumed): the windows of now end at Prometheus' now, where its samples end, and ``--at`` is checked against it, not
against this machine's clock. That clock is set ahead or behind where aiwatch reads it (``aiwatch.clock.wall``);
Prometheus and the service are real."""

from __future__ import annotations

import time

import pytest

from aiwatch import clock
from aiwatch.diagnose import PrometheusWindows, diagnose
from aiwatch.diagnose.timeargs import FutureTimeError
from tests.console.workload import serve
from tests.servers import prometheus

pytestmark = pytest.mark.slow

AHEAD = 4.0
WINDOW = 6.0


def test_a_clock_ahead_of_prometheus_does_not_cut_the_incident_windows_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(features=2, gpus=0, interval=0.1) as svc, prometheus([svc["target"]]) as prom:
        prom.wait_for("sum(rate(aiwatch_request_duration_seconds_count[5s])) > 0")
        time.sleep(2 * WINDOW + 2)  # Prometheus holds both windows
        source = PrometheusWindows(prom.url)
        level = diagnose(source, "gateway", incident=WINDOW, baseline=WINDOW)
        monkeypatch.setattr(clock, "wall", lambda: time.time() + AHEAD)
        ahead = diagnose(source, "gateway", incident=WINDOW, baseline=WINDOW)

    for d in (level, ahead):
        assert d.baseline.rate > 0
    # the last 4 s of the 6 s incident window were after Prometheus' now: a third of the requests, counted over
    # the whole window, read as the traffic falling by two thirds
    assert ahead.incident.rate > 0.8 * ahead.baseline.rate, (ahead.baseline, ahead.incident)
    assert ahead.incident.end <= time.time()


def test_an_at_is_checked_against_prometheus_clock_not_this_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    # An alert's activeAt, a few seconds ago on Prometheus' clock, on a machine whose clock runs a minute behind it:
    # it was refused as "in the future". A machine a minute ahead let a time after Prometheus' now through, a window
    # partly where Prometheus has no samples yet.
    with serve(features=2, gpus=0, interval=0.1) as svc, prometheus([svc["target"]]) as prom:
        prom.wait_for("sum(rate(aiwatch_request_duration_seconds_count[5s])) > 0")
        time.sleep(2 * WINDOW + 2)
        source = PrometheusWindows(prom.url)
        behind = lambda: time.time() - 60.0  # noqa: E731
        monkeypatch.setattr(clock, "wall", behind)
        active_at = source.api.server_time() - 3
        d = diagnose(source, "gateway", incident=WINDOW, baseline=WINDOW, at=active_at)
        ahead = lambda: time.time() + 60.0  # noqa: E731
        monkeypatch.setattr(clock, "wall", ahead)
        with pytest.raises(FutureTimeError, match=r"30 s after now \(.* on Prometheus' clock\)"):
            diagnose(source, "gateway", incident=WINDOW, baseline=WINDOW, at=source.api.server_time() + 30)

    assert d.incident.end == active_at
    assert d.incident.rate > 0 and d.baseline.rate > 0
