"""The request path's fast metric updates (aiwatch/fastpath.py): on the pinned prometheus_client they are on and
record exactly what prometheus_client's own methods record; on another layout they turn themselves off."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from aiwatch import fastpath
from aiwatch.metrics import LATENCY_BUCKETS, Metrics
from tests.servers import python_env

VALUES = [0.0, 0.0001, 0.0005, 0.00050001, 0.003, 0.1, 1.0, 59.9, 60.0, 61.0, 1e9]


def test_the_installed_prometheus_client_has_the_expected_layout() -> None:
    # Fails when prometheus_client changes what the fast path writes into: re-check the fast path against the new
    # version, then widen the prometheus-client pin in pyproject.toml.
    installed = version("prometheus-client")
    assert fastpath.LAYOUT_PROBLEM is None, f"prometheus-client {installed}: {fastpath.LAYOUT_PROBLEM}"
    assert fastpath.FAST
    assert fastpath.observe is fastpath.fast_observe
    assert fastpath.adder is fastpath.fast_adder


def _exposition(registry: CollectorRegistry) -> tuple[list[str], list[str]]:
    """Prometheus text and OpenMetrics without creation times; exemplars without their observation time."""
    text = [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]
    openmetrics = [line.rsplit(" ", 1)[0] if "trace_id" in line else line
                   for line in generate_openmetrics(registry).decode().splitlines() if "_created" not in line]
    return text, openmetrics


def test_fast_and_public_observe_record_identical_samples() -> None:
    public, fast = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    for i, value in enumerate(VALUES):
        exemplar = {"trace_id": f"{i:032x}"} if i % 2 else None
        labels = ("s", "/r", "GET", "200", "realtime")
        fastpath.public_observe(public.child(public.request_duration, labels), value, exemplar)
        fastpath.fast_observe(fast.child(fast.request_duration, labels), value, exemplar)
    assert _exposition(public.registry) == _exposition(fast.registry)
    assert any("trace_id" in line for line in _exposition(fast.registry)[1])
    labels = ("s", "/r", "GET", "200", "realtime")
    assert len(LATENCY_BUCKETS) + 1 == len(fast.child(fast.request_duration, labels)._buckets)


def test_fast_observe_respects_a_replaced_observe(metrics: Metrics) -> None:
    child = metrics.child(metrics.request_duration, ("s", "/r", "GET", "200", "realtime"))
    seen: list[float] = []
    child.observe = lambda amount, exemplar=None: seen.append(amount)
    fastpath.fast_observe(child, 0.5)
    assert seen == [0.5]


@pytest.mark.parametrize("make_adder", [fastpath.fast_adder, fastpath.public_adder])
@pytest.mark.parametrize("amount", [1, -1, 2.5])
def test_adders_match_gauge_inc(metrics: Metrics, registry: CollectorRegistry, amount: float,
                                make_adder: fastpath.Callable[..., fastpath.Adder]) -> None:
    add = make_adder(metrics.child(metrics.requests_in_flight, ("s",)))
    add(amount)
    add(amount)
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "s"}) == 2 * amount


def _run(code: str, **env: str) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=python_env(**env)).stdout.split("\n")


# A request recorded through aiwatch (histograms, phases, in-flight gauge) next to the same observations made
# through prometheus_client's public methods: the printed exposition of both must be the same.
_RECORD_BOTH = """
from prometheus_client import CollectorRegistry, generate_latest
from aiwatch import fastpath
from aiwatch.metrics import Metrics
from aiwatch.timing import RequestRecorder
print(fastpath.FAST, fastpath.observe is fastpath.public_observe, fastpath.adder is fastpath.public_adder,
      fastpath.LAYOUT_PROBLEM, sep="\\n")
ours, theirs = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
recorder = RequestRecorder(ours, service="s")
tl = recorder.begin()
tl.add("inference", None, 0.25)
recorder.finish(tl, "/r", "GET", "200", end=tl.start + 0.5)
theirs.request_duration.labels("s", "/r", "GET", "200", "realtime").observe(0.5)
theirs.phase_duration.labels("s", "", "", "inference").observe(0.25)
theirs.phase_duration.labels("s", "", "", "overhead").observe(0.25)
theirs.requests_in_flight.labels("s").inc(0)
theirs.slow_threshold.labels("s").set(0.3)
theirs.slow_requests.labels("s").inc()
theirs.slow_phase_seconds.labels("s", "inference").inc(0.25)
theirs.slow_phase_seconds.labels("s", "overhead").inc(0.25)
def text(m):
    return [l for l in generate_latest(m.registry).decode().splitlines() if "_created" not in l]
print(text(ours) == text(theirs), sum(l.endswith(" 1.0") for l in text(ours)) > 0, sep="\\n")
"""


def test_another_value_layout_turns_the_fast_path_off_and_records_the_same() -> None:
    # A prometheus_client whose values keep their count elsewhere than MutexValue._value: writing into _value, as
    # the fast path does, would lose every observation. The layout check must see it and fall back.
    patch = """
from prometheus_client import values
class CountElsewhere(values.MutexValue):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._count = 0.0
    def inc(self, amount):
        with self._lock:
            self._count += amount
    def get(self):
        with self._lock:
            return self._count
values.ValueClass = CountElsewhere
"""
    fast, public_observe, public_adder, problem, same, observed = _run(patch + _RECORD_BOTH)[:6]
    assert (fast, public_observe, public_adder) == ("False", "True", "True")
    assert "MutexValue" in problem
    assert (same, observed) == ("True", "True")


def test_the_fast_path_records_the_same_as_the_public_one_end_to_end() -> None:
    fast, public_observe, public_adder, problem, same, observed = _run(_RECORD_BOTH)[:6]
    assert (fast, public_observe, public_adder, problem) == ("True", "False", "False", "None")
    assert (same, observed) == ("True", "True")


def test_multiprocess_mode_uses_the_public_methods(tmp_path: Path) -> None:
    code = """
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from aiwatch import fastpath
from aiwatch.metrics import Metrics
m = Metrics(CollectorRegistry())
fastpath.observe(m.child(m.request_duration, ("s", "/r", "GET", "200", "realtime")), 0.003, {"trace_id": "ab" * 16})
fastpath.adder(m.child(m.requests_in_flight, ("s",)))(1)
merged = CollectorRegistry()
MultiProcessCollector(merged)
print(fastpath.LAYOUT_PROBLEM)
print(merged.get_sample_value("aiwatch_request_duration_seconds_count",
                              {"traffic_class": "realtime",
                               "service": "s", "route": "/r", "method": "GET", "status": "200"}),
      merged.get_sample_value("aiwatch_requests_in_flight", {"service": "s"}))
"""
    problem, counts = _run(code, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))[:2]
    assert problem == "prometheus_client is in multiprocess mode"
    assert counts.split() == ["1.0", "1.0"]


class _Interrupted(Exception):
    pass


def test_a_signal_handler_that_raises_never_leaves_a_metric_lock_held() -> None:
    """A signal-based timeout (Celery's soft limit, RQ, KeyboardInterrupt) raising inside an observation: a lock taken
    with acquire() and released in a try/finally was left held when the handler ran between the two, and the next
    request on that series hung the process. Up to 3000 interruptions (a few seconds at most)."""
    import signal
    import time

    m = Metrics(CollectorRegistry())
    child = m.request_duration.labels("svc", "/r", "GET", "200", "realtime")
    gauge = m.requests_in_flight.labels("svc")
    add = fastpath.adder(gauge)
    locks = [child._sum._lock, *(bucket._lock for bucket in child._buckets), gauge._value._lock]
    armed = [False]

    def handler(signum: int, frame: object) -> None:
        if armed[0]:
            armed[0] = False
            raise _Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.00003)
    interrupted, held, deadline = 0, False, time.monotonic() + 5
    try:
        while interrupted < 3000 and not held and time.monotonic() < deadline:
            armed[0] = True
            try:
                fastpath.observe(child, 0.1, {"trace_id": "0" * 32})
                add(1)
                add(-1)
                armed[0] = False
            except _Interrupted:
                interrupted += 1
                held = any(lock.locked() for lock in locks)
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        # A SIGALRM the timer raised just before it was disarmed may not have landed yet: the kernel hands a
        # process's signal to any of its threads (an xdist worker has execnet's too) and acts on the handler in place
        # when it lands. Landing on the handler restored below (pytest-timeout's, which fails "the test" from
        # wherever it interrupts), it broke a CI run's worker with an INTERNALERROR; on SIG_DFL it would end the
        # process. So this handler, disarmed, stays until nothing is pending.
        time.sleep(0.05)
        for _ in range(200):
            if signal.SIGALRM not in signal.sigpending():
                break
            time.sleep(0.01)
        signal.signal(signal.SIGALRM, previous)
    assert interrupted > 0
    assert not held, f"a metric lock was left held after {interrupted} interruptions"
