"""The banners that say what happens now (aiwatch swallowing errors, requests whose overhead was clamped, a prediction
log losing records) read the series current now: a replica gone since (its endpoint down, its rate series ended)
does not still fail "in the last 2s". The real embedded scraper reads two real endpoints; one is shut down."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from aiwatch.console import ScrapeSource
from aiwatch.metrics import Metrics
from tests.console.conftest import console_window, run_view, texts
from tests.console.endpoints import live_endpoint
from tests.servers import wait_until

pytestmark = pytest.mark.slow

WINDOW = 2
OVERHEAD = "Overhead counted as 0"
SWALLOWED = "aiwatch swallowed errors"
LOSING = "Prediction log losing records"


@contextmanager
def replica(service: str, failing: bool) -> Iterator[tuple[str, threading.Event]]:
    """A real /metrics endpoint of ``service``: 10 requests a second; ``failing``, a fifth of them with their overhead
    clamped, an error swallowed a second and a fifth of its prediction log's records failed. Yields its URL and an
    event that shuts it down."""
    def traffic(m: Metrics) -> None:
        m.request_duration.labels(service, "/predict", "POST", "200", "realtime").observe(0.05)
        m.prediction_log_records.labels(log=service, result="queued").inc()
        if failing:
            m.overhead_clamped.labels(service).inc(0.2)
            m.instrumentation_errors.labels(component="metrics").inc(0.1)
            m.prediction_log_records.labels(log=service, result="failed").inc(0.2)

    with live_endpoint(traffic) as (port, down):
        yield f"http://127.0.0.1:{port}/metrics", down


def banners(src: ScrapeSource) -> list[str]:
    shown = []
    for view in ("Latency", "Alerts", "Drift"):
        at = run_view(src, view)
        shown += texts(at.warning) + texts(at.error) + texts(at.success)
    return shown


def test_a_replica_gone_since_no_longer_fails_now(monkeypatch: pytest.MonkeyPatch) -> None:
    console_window(monkeypatch, str(WINDOW))
    with replica("busy", failing=False) as (busy, _), replica("gone", failing=True) as (gone, shut):
        src = ScrapeSource([busy, gone], interval=0.25, history=30, timeout=1.0)
        try:
            wait_until(lambda: len(src.throughput(WINDOW)) == 2, 20, what="both replicas' rates")
            before = banners(src)
            for banner in (OVERHEAD, SWALLOWED, LOSING):
                assert any(b.startswith(banner) for b in before), (banner, before)

            shut.set()
            # gone's rate series ended more than the source's latest_point_age (2 intervals and a timeout) and a
            # window ago: the caveat's answer holds gone's series only, so only the clock tells it ended
            wait_until(lambda: all(s.points[-1][0] < time.time() - 2 * 0.25 - 1.0 - WINDOW - 0.5
                                   for s in src.throughput(WINDOW) if s.labels["service"] == "gone"), 30,
                       what="gone's rate series ended")
            after = banners(src)
        finally:
            src.close()
    for banner in (OVERHEAD, SWALLOWED, LOSING):
        assert not any(b.startswith(banner) for b in after), (banner, after)
    assert f"aiwatch swallowed no errors in the last {WINDOW}s." in after
    assert f"Every record the prediction log kept in the last {WINDOW}s reached a finished file." in after
