"""The request path's Server-Timing value, written out by hand in the timeline, matches the general formatter.
(The fast metric updates are tested in tests/test_fastpath.py.)"""

from __future__ import annotations

from aiwatch.metrics import Metrics


def test_timeline_server_timing_matches_format_server_timing(metrics: Metrics) -> None:
    from aiwatch.servertiming import format_server_timing
    from aiwatch.timing import RequestRecorder

    recorder = RequestRecorder(metrics, service="s")
    tl = recorder.begin("GET")
    tl.phases[("inference", "")] = 0.0123
    tl.phases[("features", "m")] = 0.002
    assert tl.server_timing(tl.start + 0.05) == (format_server_timing(
        [("inference", 0.0123), ("features", 0.002)], 0.05 - 0.0143, 0.05, service="s"), None)
    tl.phases[("slow", "")] = 1.0  # more than the total: overhead clamps at 0
    assert "overhead;dur=0.000" in tl.server_timing(tl.start + 0.05)[0]
    recorder.finish(tl, "/r", "GET", "200")
