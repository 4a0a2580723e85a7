"""A drift monitor whose scheduled evaluation never returns is counted at each scrape, not left looking healthy."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aiwatch.drift import DriftMonitor, ReferenceProfile
from aiwatch.drift import monitor as monitor_module
from tests.servers import wait_until


def drift_errors(registry: CollectorRegistry) -> float:
    generate_latest(registry)  # a scrape: runs aiwatch's scrape checks
    value = registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "drift"})
    assert value is not None
    return value


def test_an_evaluation_that_never_returns_is_counted_at_each_scrape(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    # before: an evaluation stuck for good (here the app's time source stops answering on the schedule's thread)
    # left drift_detected 0 and the window's count exported as they were, and counted nothing: drift that came
    # after it was never reported, and no alert said so
    monkeypatch.setattr(monitor_module, "HUNG_AFTER_MIN", 0.5, raising=False)
    rng = np.random.default_rng(0)
    profile = ReferenceProfile.build({"x": rng.normal(0, 1, 5000)})
    registry = CollectorRegistry()
    stuck, release = threading.Event(), threading.Event()

    def clock() -> float:
        if stuck.is_set() and threading.current_thread().name.startswith("aiwatch-drift"):
            release.wait()
        return time.monotonic()

    monitor = DriftMonitor(profile, model="ranker", registry=registry, interval=0.05, window_seconds=3600,
                           clock=clock)
    monitor.observe_batch({"x": rng.normal(0, 1, 500)})
    monitor.start()
    try:
        wait_until(lambda: monitor.last_report is not None, what="a first evaluation")
        assert drift_errors(registry) == 0  # a schedule at work is no error
        stuck.set()
        wait_until(lambda: drift_errors(registry) >= 1, what="the stuck evaluation counted")
        first = drift_errors(registry)
        assert drift_errors(registry) > first  # at each scrape while it lasts: the alert keeps firing
        assert any("drift monitor of model 'ranker' is stuck" in r.getMessage() for r in caplog.records)
        assert registry.get_sample_value("aiwatch_drift_detected",
                                         {"model": "ranker", "feature": "x", "test": "wasserstein"}) == 0
    finally:
        release.set()
        monitor.stop()
    wait_until(lambda: monitor._busy_since is None, what="the evaluation returned")
    counted = drift_errors(registry)
    assert drift_errors(registry) == counted  # stopped: nothing more counted
