"""``aiwatch diagnose`` of now on a machine whose clock runs ahead of Prometheus' (no NTP in a container, a VM
resumed): the windows end at Prometheus' now, where its samples end, not at this machine's. This machine's clock is
set ahead where diagnose reads it (``aiwatch.diagnose.run._wall``); Prometheus and the service are real."""

from __future__ import annotations

import time

import pytest

from aiwatch.diagnose import PrometheusWindows, diagnose
from aiwatch.diagnose import run as run_module
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
        monkeypatch.setattr(run_module, "_wall", lambda: time.time() + AHEAD)
        ahead = diagnose(source, "gateway", incident=WINDOW, baseline=WINDOW)

    for d in (level, ahead):
        assert d.baseline.rate > 0
    # the last 4 s of the 6 s incident window were after Prometheus' now: a third of the requests, counted over
    # the whole window, read as the traffic falling by two thirds
    assert ahead.incident.rate > 0.8 * ahead.baseline.rate, (ahead.baseline, ahead.incident)
    assert ahead.incident.end <= time.time()
