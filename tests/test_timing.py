from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch import timing
from aiwatch.metrics import Metrics
from aiwatch.timing import RequestRecorder, current_timeline, set_default_recorder
from tests.labels import with_defaults

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, with_defaults(name, labels))


@pytest.fixture
def recorder(metrics: Metrics) -> RequestRecorder:
    return RequestRecorder(metrics, service="svc", model="m")


class ManualClock:
    """aiwatch's clock, moved by hand: phase times are then exact, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    manual = ManualClock()
    monkeypatch.setattr(timing, "_clock", manual)
    return manual


def test_phases_sum_with_overhead_to_total(recorder: RequestRecorder, registry: CollectorRegistry,
                                           clock: ManualClock) -> None:
    tl = recorder.begin()
    with aiwatch.phase("features"):
        clock.advance(0.01)
    with aiwatch.phase("inference"):
        clock.advance(0.02)
    clock.advance(0.005)
    recorder.finish(tl, "/p", "POST", "200")
    total = sample(registry, "aiwatch_request_duration_seconds_sum", service="svc", route="/p", method="POST",
                   status="200")
    parts = [sample(registry, "aiwatch_phase_duration_seconds_sum", service="svc", model="m", phase=p)
             for p in ("features", "inference", "overhead")]
    assert total == pytest.approx(0.035)
    assert parts == pytest.approx([0.01, 0.02, 0.005])


def test_phases_measure_real_time(recorder: RequestRecorder, registry: CollectorRegistry) -> None:
    # the real clock: only lower bounds (a loaded machine makes sleeps longer, never shorter)
    tl = recorder.begin()
    with aiwatch.phase("features"):
        time.sleep(0.01)
    recorder.finish(tl, "/p", "POST", "200")
    features = sample(registry, "aiwatch_phase_duration_seconds_sum", service="svc", model="m", phase="features")
    total = sample(registry, "aiwatch_request_duration_seconds_sum", service="svc", route="/p", method="POST",
                   status="200")
    assert features is not None and total is not None
    assert total >= features >= 0.01


def test_nested_phase_is_exclusive(recorder: RequestRecorder, registry: CollectorRegistry,
                                   clock: ManualClock) -> None:
    tl = recorder.begin()
    with aiwatch.phase("inference"):
        clock.advance(0.002)
        with aiwatch.phase("features"):
            clock.advance(0.03)
        clock.advance(0.005)
    recorder.finish(tl, "/p", "GET", "200")
    inference = sample(registry, "aiwatch_phase_duration_seconds_sum", service="svc", model="m", phase="inference")
    features = sample(registry, "aiwatch_phase_duration_seconds_sum", service="svc", model="m", phase="features")
    assert features == pytest.approx(0.03)
    assert inference == pytest.approx(0.007)  # the nested features time is not counted twice


def test_repeated_phase_adds_up_to_one_observation(recorder: RequestRecorder, registry: CollectorRegistry) -> None:
    tl = recorder.begin()
    for _ in range(3):
        aiwatch.record_phase("features", 0.01)
    recorder.finish(tl, "/p", "GET", "200")
    labels = {"service": "svc", "model": "m", "model_version": "", "phase": "features"}
    assert registry.get_sample_value("aiwatch_phase_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("aiwatch_phase_duration_seconds_sum", labels) == pytest.approx(0.03)


def test_concurrent_phases_clamp_overhead_and_count(recorder: RequestRecorder, registry: CollectorRegistry) -> None:
    tl = recorder.begin()
    aiwatch.record_phase("a", 5.0)  # more than the request lasted
    recorder.finish(tl, "/p", "GET", "200")
    assert sample(registry, "aiwatch_phase_duration_seconds_sum", service="svc", model="m", phase="overhead") == 0
    assert sample(registry, "aiwatch_overhead_clamped_total", service="svc") == 1


def test_decorator_sync_and_async(recorder: RequestRecorder, registry: CollectorRegistry) -> None:
    @aiwatch.phase("sync_part")
    def work(x: int) -> int:
        return x + 1

    @aiwatch.phase("async_part")
    async def awork(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def handler() -> tuple[int, int]:
        tl = recorder.begin()
        result = (work(1), await awork(3))
        recorder.finish(tl, "/p", "GET", "200")
        return result

    assert asyncio.run(handler()) == (2, 6)
    for p in ("sync_part", "async_part"):
        assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc", model="m", phase=p) == 1


def test_concurrent_requests_never_mix(recorder: RequestRecorder, registry: CollectorRegistry) -> None:
    async def request(i: int) -> None:
        tl = recorder.begin()
        async with aiwatch.phase(f"p{i}"):
            await asyncio.sleep(0.001 * (i % 3))
        assert set(name for name, _ in current_timeline().phases) == {f"p{i}"}  # type: ignore[union-attr]
        recorder.finish(tl, "/p", "GET", "200")

    async def main() -> None:
        await asyncio.gather(*(asyncio.create_task(request(i)) for i in range(20)))

    asyncio.run(main())
    for i in range(20):
        assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc", model="m", phase=f"p{i}") == 1
    assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc", model="m",
                  phase="overhead") == 20


def test_threads_never_mix(recorder: RequestRecorder, registry: CollectorRegistry) -> None:
    def request() -> None:
        tl = recorder.begin()
        with aiwatch.phase("inference"):
            pass
        assert len(current_timeline().phases) == 1  # type: ignore[union-attr]
        recorder.finish(tl, "/p", "GET", "200")

    threads = [threading.Thread(target=request) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc", model="m",
                  phase="inference") == 16
    assert sample(registry, "aiwatch_requests_in_flight", service="svc") == 0


def test_app_exception_passes_through_phase(recorder: RequestRecorder, registry: CollectorRegistry) -> None:
    tl = recorder.begin()
    with pytest.raises(KeyError), aiwatch.phase("inference"):
        raise KeyError("from the app")
    recorder.finish(tl, "/p", "GET", "500")
    assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc", model="m",
                  phase="inference") == 1


def test_phase_outside_request_goes_to_default_recorder(metrics: Metrics, registry: CollectorRegistry) -> None:
    set_default_recorder(RequestRecorder(metrics, service="worker"))
    try:
        with aiwatch.phase("inference", model="batch"):
            pass
        aiwatch.record_phase("queue", 0.25)
    finally:
        set_default_recorder(None)
    assert sample(registry, "aiwatch_background_phase_duration_seconds_count", service="worker", model="batch",
                  phase="inference") == 1
    assert sample(registry, "aiwatch_background_phase_duration_seconds_sum", service="worker", model="",
                  phase="queue") == 0.25
    assert sample(registry, "aiwatch_phase_duration_seconds_count", service="worker", model="batch",
                  phase="inference") is None


@pytest.mark.parametrize("bad", ["", "has space", "semi;colon", "total", "overhead"])
def test_bad_phase_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="phase name"):
        aiwatch.phase(bad)


def test_invalid_recorded_duration_is_counted_not_raised(metrics: Metrics, registry: CollectorRegistry) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()
    aiwatch.record_phase("queue", float("nan"))
    aiwatch.record_phase("queue", -1.0)
    recorder.finish(tl, "/p", "GET", "200")
    # counted in the request's own metrics, and nothing recorded
    assert sample(registry, "aiwatch_instrumentation_errors_total", component="phase") == 2
    assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc", model="", phase="queue") is None


def test_failing_metric_never_raises(metrics: Metrics, registry: CollectorRegistry,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = RequestRecorder(metrics, service="svc")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected")

    child = metrics.child(metrics.request_duration, ("svc", "/p", "GET", "200", "realtime"))
    monkeypatch.setattr(child, "observe", broken)
    tl = recorder.begin()
    recorder.finish(tl, "/p", "GET", "200")
    assert sample(registry, "aiwatch_instrumentation_errors_total", component="metrics") == 1
    assert current_timeline() is None


def test_begin_starts_outside_a_phase_left_open(metrics: Metrics, registry: CollectorRegistry) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    leaked = aiwatch.phase("leaked")
    leaked.__enter__()  # never exited before the next request begins in this context
    tl = recorder.begin()
    with aiwatch.phase("inner"):
        pass
    leaked.__exit__(None, None, None)  # out of order now: counted, nothing recorded into the new request
    assert [name for name, _model in tl.phases] == ["inner"]
    recorder.finish(tl, "/p", "GET", "200")
    assert sample(registry, "aiwatch_phase_duration_seconds_count", service="svc", model="", phase="leaked") is None


def test_begin_in_span_leaves_the_span_to_its_owner(metrics: Metrics, registry: CollectorRegistry,
                                                    provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    owners = provider.get_tracer("someone-else").start_span("theirs")
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin_in_span(owners)
    with aiwatch.phase("inference"):
        pass
    recorder.finish(tl, "/r", "GET", "200")
    (phase_span,) = exporter.get_finished_spans()  # aiwatch ended its phase span, not the borrowed one
    assert phase_span.name == "inference"
    assert phase_span.parent is not None and phase_span.parent.span_id == owners.get_span_context().span_id
    assert owners.is_recording() and owners.name == "theirs"  # neither ended nor renamed
    assert tl.trace_id == format(owners.get_span_context().trace_id, "032x")
    owners.end()
    assert registry.get_sample_value("aiwatch_request_duration_seconds_count",
                                     {"traffic_class": "realtime",
                                      "service": "svc", "route": "/r", "method": "GET", "status": "200"}) == 1
