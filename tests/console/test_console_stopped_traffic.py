"""A service whose requests stopped: its charts end where they stopped, and its tiles (the latest p50 / p95 / p99,
time per request, a traffic class's p95) say there is no value now instead of showing the last one as current."""

from __future__ import annotations

import time

import pytest

from aiwatch.console import ScrapeSource
from tests.console.conftest import console_window, run_view

URL = "http://127.0.0.1:9/metrics"


def exposition(requests: dict[str, int]) -> str:
    """Each service's counters after ``requests[service]`` requests of 150 ms (60 of them in the model), real-time."""
    lines = ["# TYPE aiwatch_request_duration_seconds histogram", "# TYPE aiwatch_phase_duration_seconds histogram"]
    for service, n in requests.items():
        labels = f'service="{service}",route="/",method="POST",status="200",traffic_class="realtime"'
        for le, count in (("0.1", 0), ("0.2", n), ("+Inf", n)):
            lines.append(f'aiwatch_request_duration_seconds_bucket{{{labels},le="{le}"}} {count}')
        lines.append(f"aiwatch_request_duration_seconds_count{{{labels}}} {n}")
        lines.append(f"aiwatch_request_duration_seconds_sum{{{labels}}} {0.15 * n}")
        for phase, seconds in (("inference", 0.06), ("overhead", 0.09)):
            phase_labels = f'service="{service}",model="m",phase="{phase}"'
            lines.append(f"aiwatch_phase_duration_seconds_count{{{phase_labels}}} {n}")
            lines.append(f"aiwatch_phase_duration_seconds_sum{{{phase_labels}}} {seconds * n}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def stopped(monkeypatch: pytest.MonkeyPatch) -> ScrapeSource:
    """``busy`` serves 10 requests a second throughout; ``idle`` did too for 3 s, then none for the last 6 s
    (longer than the 2 s window)."""
    console_window(monkeypatch, "2")
    src = ScrapeSource([URL], interval=1.0, history=60, start=False)
    t0 = time.time() - 10
    for i in range(10):
        src.record(URL, exposition({"busy": 10 * i, "idle": 10 * min(i, 3)}), ts=t0 + i)
    return src


def test_the_latency_tiles_of_a_service_without_requests_now_show_no_value(stopped: ScrapeSource) -> None:
    at = run_view(stopped, "Latency")
    tiles = [(m.label, m.value) for m in at.metric]
    assert tiles[:3] == [("request p50", "150 ms"), ("request p95", "195 ms"), ("request p99", "199 ms")]
    assert tiles[3:6] == [("request p50", "—"), ("request p95", "—"), ("request p99", "—")]
    assert tiles[6:9] == [("time per request", "150 ms"), ("model time", "60.0 ms"), ("model share", "40%")]
    assert tiles[9:12] == [("time per request", "—"), ("model time", "—"), ("model share", "—")]


def test_a_traffic_class_without_requests_now_shows_no_p95(stopped: ScrapeSource) -> None:
    at = run_view(stopped, "AI traffic")
    tiles = [(m.label, m.value) for m in at.metric]
    assert tiles[0] == ("realtime p95", "195 ms") and tiles[3] == ("realtime p95", "—")


def test_the_tiles_of_a_service_whose_endpoint_is_down_show_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """``gone``'s only endpoint failed its scrapes for the last 6 s (longer than the 2 s window): its rate series
    ended there, and the tiles showed their last values (150 ms, 40%) as current next to ``busy``'s."""
    console_window(monkeypatch, "2")
    down = "http://127.0.0.2:9/metrics"
    src = ScrapeSource([URL, down], interval=1.0, history=60, start=False)
    t0 = time.time() - 10
    for i in range(10):
        src.record(URL, exposition({"busy": 10 * i}), ts=t0 + i)
        if i <= 3:
            src.record(down, exposition({"gone": 10 * i}), ts=t0 + i + 0.01)
        else:
            src.record(down, None, ts=t0 + i + 0.01, error="connection refused")
    tiles = [(m.label, m.value) for m in run_view(src, "Latency").metric]
    assert tiles[:3] == [("request p50", "150 ms"), ("request p95", "195 ms"), ("request p99", "199 ms")]
    assert tiles[3:6] == [("request p50", "—"), ("request p95", "—"), ("request p99", "—")]
    assert tiles[6:9] == [("time per request", "150 ms"), ("model time", "60.0 ms"), ("model share", "40%")]
    assert tiles[9:12] == [("time per request", "—"), ("model time", "—"), ("model share", "—")]
    tiles = [(m.label, m.value) for m in run_view(src, "AI traffic").metric]
    assert tiles[0] == ("realtime p95", "195 ms") and tiles[3] == ("realtime p95", "—")
