"""The request path's fast metric updates behave exactly like prometheus_client's own methods."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from aiwatch.metrics import LATENCY_BUCKETS, Metrics, adder, observe
from tests.servers import python_env

VALUES = [0.0, 0.0001, 0.0005, 0.00050001, 0.003, 0.1, 1.0, 59.9, 60.0, 61.0, 1e9]


def test_observe_matches_histogram_observe() -> None:
    slow, fast = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    for i, value in enumerate(VALUES):
        exemplar = {"trace_id": f"{i:032x}"} if i % 2 else None
        slow.child(slow.request_duration, ("s", "/r", "GET", "200")).observe(value, exemplar)
        observe(fast.child(fast.request_duration, ("s", "/r", "GET", "200")), value, exemplar)
    def text(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert text(slow.registry) == text(fast.registry)

    def without_timestamps(registry: CollectorRegistry) -> list[str]:
        # exemplars carry the observation time: compare everything else
        return [line.rsplit(" ", 1)[0] if "trace_id" in line else line
                for line in generate_openmetrics(registry).decode().splitlines() if "_created" not in line]

    assert without_timestamps(slow.registry) == without_timestamps(fast.registry)
    assert len(LATENCY_BUCKETS) + 1 == len(fast.child(fast.request_duration, ("s", "/r", "GET", "200"))._buckets)


def test_observe_respects_a_replaced_observe(metrics: Metrics) -> None:
    child = metrics.child(metrics.request_duration, ("s", "/r", "GET", "200"))
    seen: list[float] = []
    child.observe = lambda amount, exemplar=None: seen.append(amount)
    observe(child, 0.5)
    assert seen == [0.5]


@pytest.mark.parametrize("amount", [1, -1, 2.5])
def test_adder_matches_gauge_inc(metrics: Metrics, registry: CollectorRegistry, amount: float) -> None:
    add = adder(metrics.child(metrics.requests_in_flight, ("s",)))
    add(amount)
    add(amount)
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "s"}) == 2 * amount


def test_observe_and_adder_in_multiprocess_mode(tmp_path: object) -> None:
    code = """
import sys
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from aiwatch.metrics import Metrics, adder, observe
m = Metrics(CollectorRegistry())
observe(m.child(m.request_duration, ("s", "/r", "GET", "200")), 0.003, {"trace_id": "ab" * 16})
adder(m.child(m.requests_in_flight, ("s",)))(1)
merged = CollectorRegistry()
MultiProcessCollector(merged)
print(merged.get_sample_value("aiwatch_request_duration_seconds_count",
                              {"service": "s", "route": "/r", "method": "GET", "status": "200"}),
      merged.get_sample_value("aiwatch_requests_in_flight", {"service": "s"}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=python_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))).stdout
    assert out.split() == ["1.0", "1.0"]


def test_timeline_server_timing_matches_format_server_timing(metrics: Metrics) -> None:
    from aiwatch.servertiming import format_server_timing
    from aiwatch.timing import RequestRecorder

    recorder = RequestRecorder(metrics, service="s")
    tl = recorder.begin("GET")
    tl.phases[("inference", "")] = 0.0123
    tl.phases[("features", "m")] = 0.002
    assert tl.server_timing(tl.start + 0.05) == format_server_timing(
        [("inference", 0.0123), ("features", 0.002)], 0.05 - 0.0143, 0.05)
    tl.phases[("slow", "")] = 1.0  # more than the total: overhead clamps at 0
    assert "overhead;dur=0.000" in tl.server_timing(tl.start + 0.05)
    recorder.finish(tl, "/r", "GET", "200")
