"""The timeline's less travelled paths, each checked for its exact effect: the model label set mid-request, calls
remembered for the slow-request split, phases recorded by hand inside and outside a request, the errors aiwatch
counts under their own component, and phase spans (their parent, model attribute and error status)."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch import safety, timing
from aiwatch.cardinality import OVERFLOW, guard_for
from aiwatch.metrics import Metrics, default_metrics
from aiwatch.recording import make_recorder
from aiwatch.servertiming import parse_server_timing
from aiwatch.streaming import ChunkTimer
from aiwatch.timing import RequestRecorder, RequestTimeline, call_site, record_phase, set_model
from aiwatch.traffic import TrafficClasses
from tests.hostile_numbers import BAD_SECONDS, NOT_A_PERIOD, OTHER_SECONDS, exact_float
from tests.test_timing import ManualClock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    manual = ManualClock()
    monkeypatch.setattr(timing, "_clock", manual)
    return manual


def phase_sum(registry: CollectorRegistry, phase: str, model: str = "", service: str = "svc") -> float | None:
    return registry.get_sample_value("aiwatch_phase_duration_seconds_sum",
                                     {"service": service, "model": model, "model_version": "", "phase": phase})


def background_sum(registry: CollectorRegistry, phase: str, model: str = "", service: str = "svc") -> float | None:
    """A phase recorded outside any request: in its own histogram, not in the requests' phases."""
    return registry.get_sample_value("aiwatch_background_phase_duration_seconds_sum",
                                     {"service": service, "model": model, "phase": phase})


def recorded_sum(registry: CollectorRegistry, phase: str, model: str, in_request: bool) -> float | None:
    """The time of ``phase`` where it belongs: the requests' phases in a request, else the background phases; the
    other family holds none of it."""
    found, other = ((phase_sum, background_sum) if in_request else (background_sum, phase_sum))
    assert other(registry, phase, model) is None
    return found(registry, phase, model)


def errors(metrics: Metrics, component: str) -> float:
    return metrics.registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": component}) or 0.0


# ------------------------------------------------------------------------------------------ the model label


def test_set_model_labels_the_rest_of_the_request_through_the_guard(metrics: Metrics) -> None:
    recorder = make_recorder(service="svc", metrics=metrics, max_label_values=1)
    set_model("ignored")  # outside a request: nothing to label
    tl = recorder.begin()
    set_model("ranker")
    assert tl.model == "ranker"
    with aiwatch.phase("inference"):
        pass
    recorder.finish(tl, "/p", "GET", "200")
    assert metrics.registry.get_sample_value(
        "aiwatch_phase_duration_seconds_count",
        {"service": "svc", "model": "ranker", "model_version": "", "phase": "inference"}) == 1.0
    tl = recorder.begin()
    set_model("second-model")  # past the bound of 1: folded
    assert tl.model == OVERFLOW
    recorder.finish(tl, "/p", "GET", "200")


def test_set_model_in_another_thread_while_finish_runs_leaves_the_request_under_one_model(metrics: Metrics) -> None:
    """Another thread of the request (its context copied into a pool) calls set_model() just after finish() marked
    the request finished, before it read the model: the phases' move was refused there (finished), but the model was
    changed all the same, and the request's phases were recorded under "a" and its overhead under "b". With thread
    switches every microsecond, 2, 0 and 3 of 3000 such requests were split; here the call is made at that point."""
    recorder = make_recorder(service="svc", metrics=metrics, model="a")
    in_flight = recorder._in_flight
    late: list[contextvars.Context] = []

    def set_model_meanwhile(delta: int) -> None:  # finish() calls it right after marking the request finished
        if delta < 0:
            worker = threading.Thread(target=late[0].run, args=(set_model, "b"))
            worker.start()
            worker.join(30)
            assert not worker.is_alive()
        in_flight(delta)

    recorder._in_flight = set_model_meanwhile  # type: ignore[method-assign]

    def request() -> RequestTimeline:
        tl = recorder.begin()
        record_phase("inference", 0.25)
        late.append(contextvars.copy_context())
        recorder.finish(tl, "/p", "GET", "200")
        return tl

    tl = contextvars.copy_context().run(request)
    counts = {(s.labels["model"], s.labels["phase"]): s.value for family in metrics.registry.collect()
              for s in family.samples if s.name == "aiwatch_phase_duration_seconds_count"}
    assert counts == {("a", "inference"): 1.0, ("a", "overhead"): 1.0}
    assert tl.model == "a"


def test_a_phase_names_its_own_model_and_otherwise_takes_the_requests(recorder: RequestRecorder,
                                                                    registry: CollectorRegistry,
                                                                    clock: ManualClock) -> None:
    tl = recorder.begin()
    tl.add("features", "embedder", 0.25)
    tl.add("features", None, 0.5)
    recorder.finish(tl, "/p", "GET", "200")
    assert phase_sum(registry, "features", "embedder") == 0.25
    assert phase_sum(registry, "features", "m") == 0.5


def test_phases_recorded_before_set_model_are_labelled_with_the_model_the_request_ends_with(
        metrics: Metrics, clock: ManualClock) -> None:
    # a phase took the model current when it was recorded, while the overhead (and tokens, fallbacks) took the model
    # the request ended with: phases before set_model() stayed under the earlier model, and one request's time was
    # split between two models' series
    recorder = RequestRecorder(metrics, service="svc", model="base")
    tl = recorder.begin()
    with aiwatch.phase("features"):
        clock.advance(0.25)
    clock.advance(0.125)
    record_phase("queue", 0.125)
    with aiwatch.phase("embed", model="embedder"):  # names another model: keeps it
        clock.advance(0.0625)
    with aiwatch.phase("warmup", model="base"):  # names the request's model of the moment: keeps it too
        clock.advance(0.0625)
    set_model("ranker", "v2")
    with aiwatch.phase("features"):  # the same phase again: one observation of both times
        clock.advance(0.25)
    with aiwatch.phase("inference"):
        clock.advance(0.5)
    clock.advance(0.25)
    assert tl.phases == {("features", "ranker"): 0.5, ("queue", "ranker"): 0.125, ("embed", "embedder"): 0.0625,
                         ("warmup", "base"): 0.0625, ("inference", "ranker"): 0.5}
    recorder.finish(tl, "/p", "GET", "200")
    registry = metrics.registry
    expected = {("features", "ranker", "v2"): (1.0, 0.5), ("queue", "ranker", "v2"): (1.0, 0.125),
                ("inference", "ranker", "v2"): (1.0, 0.5), ("overhead", "ranker", "v2"): (1.0, 0.25),
                ("embed", "embedder", ""): (1.0, 0.0625), ("warmup", "base", ""): (1.0, 0.0625)}
    seen = {(s.labels["phase"], s.labels["model"], s.labels["model_version"]): s.value
            for family in registry.collect() if family.name == "aiwatch_phase_duration_seconds"
            for s in family.samples if s.name.endswith("_count")}
    assert seen == {key: count for key, (count, _) in expected.items()}
    for (phase, model, version), (_, seconds) in expected.items():
        assert versioned_sum(registry, phase, model, version) == seconds, (phase, model, version)


@pytest.fixture
def recorder(metrics: Metrics) -> RequestRecorder:
    return RequestRecorder(metrics, service="svc", model="m")


def test_elapsed_is_measured_from_the_start(recorder: RequestRecorder, clock: ManualClock) -> None:
    tl = recorder.begin()
    clock.advance(0.125)
    assert tl.elapsed() == 0.125
    assert tl.elapsed(clock.now + 1.0) == 1.125
    recorder.finish(tl, "/p", "GET", "200")


# ---------------------------------------------------------------------------------- calls and their phase


def test_call_site_is_the_innermost_open_phase(recorder: RequestRecorder) -> None:
    assert call_site() == (None, "")
    tl = recorder.begin()
    assert call_site() == (tl, "overhead")
    with aiwatch.phase("features"):
        assert call_site() == (tl, "features")
        with aiwatch.phase("lookup", model="cache"):
            assert call_site() == (tl, "lookup")
    recorder.finish(tl, "/p", "GET", "200")


def test_calls_add_up_per_peer_and_phase(recorder: RequestRecorder) -> None:
    tl = recorder.begin()
    assert tl.calls is None
    tl.add_call("ranker", "inference", 0.5, 0.125)
    tl.add_call("ranker", "inference", 0.25, None)  # the peer reported no time: no network time known
    tl.add_call("ranker", "features", 0.0625, 0.03125)
    assert tl.calls == {("ranker", "inference"): [0.75, 0.125], ("ranker", "features"): [0.0625, 0.03125]}
    recorder.finish(tl, "/p", "GET", "200")


def test_a_slow_request_adds_its_phases_and_calls_to_the_tail_counters(metrics: Metrics,
                                                                       clock: ManualClock) -> None:
    recorder = RequestRecorder(metrics, service="gw", slow_threshold=0.5, guard=None)
    tl = recorder.begin()
    with aiwatch.phase("features"):
        clock.advance(0.25)
    with aiwatch.phase("inference"):
        clock.advance(0.5)
        tl.add_call("ranker", "inference", 0.375, 0.125)
    clock.advance(0.125)
    recorder.finish(tl, "/p", "GET", "200")
    r = metrics.registry
    assert r.get_sample_value("aiwatch_slow_requests_total", {"service": "gw"}) == 1.0
    assert {p: r.get_sample_value("aiwatch_slow_phase_seconds_total", {"service": "gw", "phase": p})
            for p in ("features", "inference", "overhead")} == {"features": 0.25, "inference": 0.5,
                                                                 "overhead": 0.125}
    labels = {"service": "gw", "peer": "ranker", "phase": "inference"}
    assert r.get_sample_value("aiwatch_slow_call_seconds_total", labels) == 0.375
    assert r.get_sample_value("aiwatch_slow_network_seconds_total", labels) == 0.125
    fast = recorder.begin()
    clock.advance(0.5)  # at the threshold, not above it: not slow
    recorder.finish(fast, "/p", "GET", "200")
    assert r.get_sample_value("aiwatch_slow_requests_total", {"service": "gw"}) == 1.0


# --------------------------------------------------------------------------------- phases recorded by hand


def test_a_phase_recorded_inside_a_phase_keeps_the_outer_one_exclusive(recorder: RequestRecorder,
                                                                       registry: CollectorRegistry,
                                                                       clock: ManualClock) -> None:
    tl = recorder.begin()
    with aiwatch.phase("batch"):
        clock.advance(1.0)
        record_phase("queue", 0.25)
        record_phase("queue", 0.0)  # zero is a duration too
    recorder.finish(tl, "/p", "GET", "200")
    assert phase_sum(registry, "batch", "m") == 0.75
    assert phase_sum(registry, "queue", "m") == 0.25


def test_a_phase_recorded_outside_a_request_goes_to_the_default_recorder(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="worker", model="base", guard=None)
    timing.set_default_recorder(recorder)
    record_phase("queue", 0.5)
    record_phase("inference", 0.25, model="ranker")
    record_phase("idle", 0.0)
    r = metrics.registry
    assert background_sum(r, "queue", "base", "worker") == 0.5
    assert background_sum(r, "inference", "ranker", "worker") == 0.25
    assert r.get_sample_value("aiwatch_background_phase_duration_seconds_count",
                              {"service": "worker", "model": "base", "phase": "idle"}) == 1.0
    # none of it is request time: the requests' phases, which the latency split and the phase alerts read, are empty
    assert not [s for f in r.collect() for s in f.samples if s.name.startswith("aiwatch_phase_duration_seconds")]


def test_names_recorded_outside_a_request_pass_the_guard(metrics: Metrics) -> None:
    recorder = make_recorder(service="worker", metrics=metrics, max_label_values=1)
    timing.set_default_recorder(recorder)
    record_phase("a", 0.5, model="m1")
    record_phase("b", 0.25, model="m2")
    assert background_sum(metrics.registry, OVERFLOW, OVERFLOW, "worker") == 0.25
    assert metrics.registry.get_sample_value("aiwatch_label_overflow_total", {"label": "phase"}) == 1.0
    assert metrics.registry.get_sample_value("aiwatch_label_overflow_total", {"label": "model"}) == 1.0


@pytest.mark.parametrize("bad", [-0.001, float("inf"), float("nan")])
def test_an_invalid_duration_is_counted_under_phase_with_its_value(bad: float, caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    before = errors(default_metrics(), "phase")
    record_phase("queue", bad)
    assert errors(default_metrics(), "phase") == before + 1
    assert f"ValueError(\"phase 'queue' got an invalid duration {bad!r}\")" in caplog.text


@pytest.mark.parametrize("bad", BAD_SECONDS)
@pytest.mark.parametrize("in_request", [True, False], ids=["in-a-request", "outside"])
def test_a_duration_that_is_no_number_of_seconds_is_counted_in_the_requests_metrics_and_skipped(
        metrics: Metrics, bad: Any, in_request: bool) -> None:
    # before: 10**400, a Decimal NaN, a str and None raised into the caller (OverflowError, TypeError), 2**53+1 and a
    # Unix timestamp were recorded (swamping the sum), True was a second, and a refused value was counted in the
    # process's default registry instead of the request's
    recorder = RequestRecorder(metrics, service="svc", model="m")
    timing.set_default_recorder(recorder)
    tl = recorder.begin() if in_request else None
    record_phase("queue", bad)
    record_phase("queue", 0.25)
    aiwatch.degraded("fallback")
    if tl is not None:
        recorder.finish(tl, "/p", "GET", "200")
    assert errors(metrics, "phase") == 1
    assert recorded_sum(metrics.registry, "queue", "m", in_request) == 0.25  # the bad value left the series as it was
    assert metrics.registry.get_sample_value("aiwatch_degraded_responses_total",
                                             {"service": "svc", "model": "m", "reason": "fallback"}) == 1


def test_degraded_outside_a_request_does_not_raise_when_no_default_recorder_can_be_made(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # degraded() "never raises", but outside a request it built the default recorder first, outside its guard: a
    # malformed AIWATCH_TRAFFIC_CLASSES raised that ValueError into the batch job that marked its fallback
    monkeypatch.setattr(safety, "_burst", safety._BurstLog())  # this test's failure is logged, whatever ran before
    timing.set_default_recorder(None)
    monkeypatch.setenv("AIWATCH_TRAFFIC_CLASSES", "realtime, bulk jobs")
    before = errors(default_metrics(), "degraded")
    aiwatch.degraded("fallback")
    assert errors(default_metrics(), "degraded") == before + 1
    assert "AIWATCH_TRAFFIC_CLASSES" in caplog.text


def _phase_block() -> None:
    with aiwatch.phase("preprocess"):
        pass


OUTSIDE_A_REQUEST = {
    "record_phase": (lambda: record_phase("preprocess", 0.01), "phase"),
    "record_phase, a bad duration": (lambda: record_phase("preprocess", -1.0), "phase"),
    "record_phase, a model that is no label": (lambda: record_phase("preprocess", 0.01, model=["a"]), "phase"),
    "phase": (_phase_block, "phase"),
    "record_tokens": (lambda: aiwatch.record_tokens(input_tokens=3, output_tokens=5), "genai"),
}


@pytest.mark.parametrize("call", list(OUTSIDE_A_REQUEST.values()), ids=list(OUTSIDE_A_REQUEST))
@pytest.mark.parametrize("variable", [("AIWATCH_TRAFFIC_CLASSES", "realtime, bulk jobs"),
                                      ("AIWATCH_TRAFFIC_CLASS_ROUTES", "/x=nosuch")], ids=lambda v: v[0])
def test_recording_outside_a_request_does_not_raise_when_no_default_recorder_can_be_made(
        monkeypatch: pytest.MonkeyPatch, call: tuple[Any, str], variable: tuple[str, str]) -> None:
    # phases and tokens recorded outside a request "never raise", but they built the default recorder outside any
    # guard: a malformed AIWATCH_* variable raised its ValueError into the background worker that recorded them
    record, component = call
    timing.set_default_recorder(None)
    monkeypatch.setenv(*variable)
    before = errors(default_metrics(), component)
    record()
    assert errors(default_metrics(), component) > before
    timing.set_default_recorder(None)


@pytest.mark.parametrize("other", OTHER_SECONDS)
@pytest.mark.parametrize("in_request", [True, False], ids=["in-a-request", "outside"])
def test_a_duration_of_another_numeric_type_is_recorded_as_a_float(metrics: Metrics, other: Any,
                                                                    in_request: bool) -> None:
    # before: a Decimal raised TypeError in a request (and was lost as a metrics error outside one); a numpy float32
    # turned the histogram's sum into a float32 for good
    recorder = RequestRecorder(metrics, service="svc", model="m")
    timing.set_default_recorder(recorder)
    tl = recorder.begin() if in_request else None
    record_phase("queue", other)
    record_phase("queue", 0.25)
    if tl is not None:
        recorder.finish(tl, "/p", "GET", "200")
    total = recorded_sum(metrics.registry, "queue", "m", in_request)
    assert total is not None and total == float(other) + 0.25 and exact_float(total)
    assert errors(metrics, "phase") == errors(metrics, "metrics") == 0


def test_a_phase_exited_out_of_order_is_counted_under_phase(recorder: RequestRecorder,
                                                            caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    before = errors(default_metrics(), "phase")
    tl = recorder.begin()
    outer, inner = aiwatch.phase("outer"), aiwatch.phase("inner")
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert errors(default_metrics(), "phase") == before + 1
    assert "RuntimeError(\"phase 'outer' exited out of order\")" in caplog.text
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    recorder.finish(tl, "/p", "GET", "200")


def test_a_failing_phase_metric_outside_a_request_is_counted_under_metrics(metrics: Metrics,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = RequestRecorder(metrics, service="worker", guard=None)
    timing.set_default_recorder(recorder)

    class Broken:
        def labels(self, *args: Any) -> Any:
            raise RuntimeError("no histogram")

    monkeypatch.setattr(metrics, "background_phase_duration", Broken())
    record_phase("queue", 0.5)
    assert errors(metrics, "metrics") == 1.0


# -------------------------------------------------------------------------------------------- phase spans


def test_phase_spans_are_children_with_their_model_and_error_status(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", model="base", tracer_provider=provider)

    async def handler() -> None:
        async with aiwatch.phase("features"):
            with aiwatch.phase("lookup", model="cache"):
                pass
        with pytest.raises(KeyError), aiwatch.phase("inference"):
            raise KeyError("user")

    tl = recorder.begin("GET")
    asyncio.run(handler())
    recorder.finish(tl, "/p", "GET", "200")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = next(s for s in spans.values() if s.kind == trace.SpanKind.SERVER)
    features, lookup, inference = spans["features"], spans["lookup"], spans["inference"]
    assert features.parent is not None and features.parent.span_id == server.context.span_id
    assert lookup.parent is not None and lookup.parent.span_id == features.context.span_id
    assert inference.parent is not None and inference.parent.span_id == server.context.span_id
    assert (features.attributes or {})["aiwatch.model"] == "base"
    assert (lookup.attributes or {})["aiwatch.model"] == "cache"
    assert inference.status.status_code == trace.StatusCode.ERROR and inference.status.description == "KeyError"
    assert [e.name for e in inference.events] == ["exception"]
    assert features.status.status_code == trace.StatusCode.UNSET and not features.events


def test_a_phase_span_names_the_model_the_app_gave_where_its_label_is_folded(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", model="base", guard=guard_for(metrics, 1),
                               tracer_provider=provider)
    tl = recorder.begin()  # the recorder's model, admitted: the bound of one model is reached
    with aiwatch.phase("inference"):
        pass
    recorder.finish(tl, "/p", "POST", "200")
    tl = recorder.begin()
    aiwatch.set_model("chat-large")  # past the bound: its label folds, its spans keep the name
    with aiwatch.phase("inference"):
        pass
    recorder.finish(tl, "/p", "POST", "200")
    phases = [span for span in exporter.get_finished_spans() if span.name == "inference"]
    assert [(span.attributes or {})["aiwatch.model"] for span in phases] == ["base", "chat-large"]
    assert metrics.registry.get_sample_value(
        "aiwatch_phase_duration_seconds_count", {"service": "svc", "phase": "inference", "model": OVERFLOW,
                                                 "model_version": ""}) == 1


def test_begin_passes_its_span_arguments_and_start_time(metrics: Metrics, provider: TracerProvider,
                                                        exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    parent = trace.SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True,
                               trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    tl = recorder.begin("first-name", context, {"k": "v"}, start=12.5)
    assert tl.start == 12.5 and tl.trace_id == format(0xABC, "032x")
    recorder.finish(tl, "/p", "GET", "200", end=13.0)
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == 0xABC and span.parent is not None and span.parent.span_id == 0xDEF
    assert (span.attributes or {})["k"] == "v" and span.kind == trace.SpanKind.SERVER
    assert metrics.registry.get_sample_value("aiwatch_request_duration_seconds_sum",
                                             {"service": "svc", "route": "/p", "method": "GET",
                                              "status": "200", "traffic_class": "realtime"}) == 0.5


def test_begin_in_span_takes_the_start_time(metrics: Metrics, provider: TracerProvider) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    span = provider.get_tracer("owner").start_span("owner's")
    tl = recorder.begin_in_span(span, start=7.0)
    assert tl.start == 7.0 and tl.span is span and not tl.owns_span
    recorder.finish(tl, "/p", "GET", "200", end=7.25)
    span.end()


class _BrokenTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer down")


def test_a_failing_tracer_is_counted_under_tracing_and_the_request_goes_on(metrics: Metrics,
                                                                          caplog: pytest.LogCaptureFixture,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin_with(_BrokenTracer(), "GET")
    assert errors(metrics, "tracing") == 1.0 and tl.span is None
    tl.tracer, tl.span = _BrokenTracer(), object()  # phase spans fail too
    with aiwatch.phase("features"):
        pass
    assert errors(metrics, "tracing") == 2.0
    tl.span = None
    recorder.finish(tl, "/p", "GET", "200")
    assert "RuntimeError('tracer down')" in caplog.text
    assert metrics.registry.get_sample_value(
        "aiwatch_phase_duration_seconds_count",
        {"service": "svc", "model": "", "model_version": "", "phase": "features"}) == 1.0


class _SpanThatFailsToEnd:
    def __init__(self) -> None:
        self.ended = 0

    def set_attribute(self, *args: Any) -> None:
        pass

    def end(self) -> None:
        self.ended += 1
        raise RuntimeError("exporter down")


class _TracerOfFailingSpans:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        return _SpanThatFailsToEnd()


def test_a_phase_span_that_fails_to_end_is_counted_and_the_phase_still_recorded(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin_with(None, "GET")
    tl.tracer, tl.span = _TracerOfFailingSpans(), object()
    with aiwatch.phase("features"):
        pass
    assert errors(metrics, "tracing") == 1.0
    _finish_and_assert_the_phase_recorded_once(metrics, recorder, tl, model="")


def test_a_phase_span_that_fails_to_end_outside_its_request_is_counted_on_the_requests_metrics(
        metrics: Metrics) -> None:
    # a generator's phase ended in another thread while its request runs (a generator dropped unclosed, collected
    # there): its span's failure to end is the request's recorder's error, not the process default metrics'
    recorder = RequestRecorder(metrics, service="svc")

    def tokens() -> Iterator[int]:
        with aiwatch.phase("generate"):
            yield 1

    task = contextvars.copy_context()
    tl = task.run(recorder.begin_with, None, "GET")
    tl.tracer, tl.span = _TracerOfFailingSpans(), object()
    stream = tokens()
    assert task.copy().run(next, stream) == 1
    default_before = errors(default_metrics(), "tracing")
    thread = threading.Thread(target=lambda: next(stream, None))  # a fresh context: outside any request
    thread.start()
    thread.join()
    assert (errors(metrics, "tracing"), errors(metrics, "phase")) == (1.0, 1.0)  # the span; its time in no request
    assert errors(default_metrics(), "tracing") == default_before
    tl.tracer = tl.span = None
    task.run(recorder.finish, tl, "/p", "GET", "200")


def _finish_and_assert_the_phase_recorded_once(metrics: Metrics, recorder: RequestRecorder, tl: Any,
                                               model: str) -> None:
    """Finish the request untraced; its ``features`` phase of ``model`` was recorded once."""
    tl.tracer = tl.span = None
    recorder.finish(tl, "/p", "GET", "200")
    assert metrics.registry.get_sample_value(
        "aiwatch_phase_duration_seconds_count",
        {"service": "svc", "model": model, "model_version": "", "phase": "features"}) == 1.0


class _PhaseSpanRefusingAttributes:
    def __init__(self) -> None:
        self.ended = 0

    def set_attribute(self, *args: Any) -> None:
        raise RuntimeError("attribute refused")

    def end(self) -> None:
        self.ended += 1


class _TracerOfPhaseSpansRefusingAttributes:
    def __init__(self) -> None:
        self.spans: list[_PhaseSpanRefusingAttributes] = []

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        span = _PhaseSpanRefusingAttributes()
        self.spans.append(span)
        return span


def test_a_phase_span_started_but_never_made_current_is_still_ended_once(metrics: Metrics) -> None:
    # the span is started, then refuses the model attribute before it is made current: the frame holds a span and
    # no context token, and the span must still be ended (the inline path, taken when the frame has no span, ends
    # none)
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin_with(None, "GET")
    tracer = _TracerOfPhaseSpansRefusingAttributes()
    tl.tracer, tl.span = tracer, object()
    with aiwatch.phase("features", model="ranker"):
        pass
    assert [span.ended for span in tracer.spans] == [1]
    assert errors(metrics, "tracing") == 1.0
    _finish_and_assert_the_phase_recorded_once(metrics, recorder, tl, model="ranker")


# ------------------------------------------------------------------------------------------ the recorder's set-up


def test_a_recorder_given_no_metrics_records_into_the_process_default() -> None:
    assert RequestRecorder(service="svc").metrics is default_metrics()


@pytest.mark.parametrize("threshold", [0.0, -1.0, float("inf"), float("nan")])
def test_slow_threshold_must_be_a_finite_positive_number_of_seconds(metrics: Metrics, threshold: float) -> None:
    with pytest.raises(ValueError, match=f"^slow_threshold {NOT_A_PERIOD}"):
        RequestRecorder(metrics, service="svc", slow_threshold=threshold)


@pytest.mark.parametrize("threshold", [*(p for p in BAD_SECONDS if p.id != "None"), pytest.param(0, id="zero")])
def test_a_slow_threshold_that_is_no_number_of_seconds_is_a_value_error_naming_it(metrics: Metrics,
                                                                                   threshold: Any) -> None:
    # before: 10**400 was accepted and the exported threshold failed (a metrics error, the gauge left at 0); 2**53+1,
    # a Unix timestamp and True were accepted; a string or None raised TypeError, a Decimal NaN InvalidOperation
    with pytest.raises(ValueError, match=f"^slow_threshold {NOT_A_PERIOD}"):
        RequestRecorder(metrics, service="svc", slow_threshold=threshold)
    assert errors(metrics, "metrics") == 0


@pytest.mark.parametrize("threshold", OTHER_SECONDS)
def test_a_slow_threshold_of_another_numeric_type_is_kept_as_a_float(metrics: Metrics, threshold: Any) -> None:
    # before: kept as given, and compared with every request's duration as a Decimal or a Fraction
    recorder = RequestRecorder(metrics, service="svc", slow_threshold=threshold)
    assert type(recorder.slow_threshold) is float and recorder.slow_threshold == float(threshold)


def test_a_slow_threshold_from_the_environment_names_the_variable(metrics: Metrics,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_SLOW_THRESHOLD_SECONDS", "1e400")
    with pytest.raises(ValueError, match=f"^AIWATCH_SLOW_THRESHOLD_SECONDS {NOT_A_PERIOD}"):
        RequestRecorder(metrics, service="svc")


def test_the_smallest_positive_slow_threshold_is_accepted_and_exported(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="svc", slow_threshold=1e-9)
    assert recorder.slow_threshold == 1e-9
    assert metrics.registry.get_sample_value("aiwatch_slow_threshold_seconds", {"service": "svc"}) == 1e-9


def test_server_timing_names_a_service_with_spaces_and_a_percent_sign_quoted(metrics: Metrics,
                                                                              clock: ManualClock) -> None:
    recorder = RequestRecorder(metrics, service="my svc 100%")
    tl = recorder.begin()
    clock.advance(0.002)
    assert tl.server_timing() == ("overhead;dur=2.000, total;dur=2.000;desc=\"my svc 100%\"", None)
    recorder.finish(tl, "/", "GET", "200")


def test_server_timing_clamps_an_overhead_of_negative_zero_to_zero(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin(start=0.0)
    value, _ = tl.server_timing(now=-0.0)  # a clock reading of -0.0: the time so far is -0.0 - 0.0 = -0.0
    assert value.startswith("overhead;dur=0.000, ")
    recorder.finish(tl, "/", "GET", "200")


def test_server_timing_clamps_a_total_of_negative_zero_to_zero_which_its_own_parser_reads(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin(start=0.0)
    value, _ = tl.server_timing(now=-0.0)  # the time so far is -0.0 - 0.0 = -0.0, printed "-0.000" unclamped
    assert value == 'overhead;dur=0.000, total;dur=0.000;desc="svc"'
    assert parse_server_timing(value) == {"overhead": 0.0, "total": 0.0}  # the parser refuses a negative dur
    recorder.finish(tl, "/", "GET", "200")


def test_metrics_failing_at_start_up_are_counted_under_metrics_and_requests_still_recorded(
        metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    real_child = metrics.child

    def child(metric: Any, labels: Any) -> Any:
        if metric is metrics.requests_in_flight or metric is metrics.slow_threshold:
            raise RuntimeError("broken family")
        return real_child(metric, labels)

    monkeypatch.setattr(metrics, "child", child)
    recorder = RequestRecorder(metrics, service="svc")
    assert errors(metrics, "metrics") == 2  # the threshold gauge and the in-flight gauge
    tl = recorder.begin()  # the in-flight gauge is skipped, not failed again per request
    recorder.finish(tl, "/", "GET", "200")
    assert errors(metrics, "metrics") == 2
    assert metrics.registry.get_sample_value(
        "aiwatch_request_duration_seconds_count",
        {"service": "svc", "route": "/", "method": "GET", "status": "200", "traffic_class": "realtime"}) == 1


def test_every_histogram_of_a_traced_request_carries_its_trace_id_as_exemplar(
        metrics: Metrics, clock: ManualClock, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin()
    with aiwatch.phase("inference"):
        clock.advance(0.004)
    clock.advance(0.001)
    recorder.finish(tl, "/", "GET", "200")
    (trace_id_int,) = {s.context.trace_id for s in exporter.get_finished_spans() if s.context is not None}
    trace_id = f"{trace_id_int:032x}"  # the request's span and its phase's child share it
    exemplars = {(m.name, s.labels.get("phase", "")): s.exemplar.labels for m in metrics.registry.collect()
                 for s in m.samples if s.exemplar is not None}
    assert exemplars == {("aiwatch_request_duration_seconds", ""): {"trace_id": trace_id},
                         ("aiwatch_phase_duration_seconds", "inference"): {"trace_id": trace_id},
                         ("aiwatch_phase_duration_seconds", "overhead"): {"trace_id": trace_id}}


# ---------------------------------------------------------------- names, label budgets and counted failures


def counted_once_and_logged(metrics: Metrics, component: str, message: str, caplog: pytest.LogCaptureFixture,
                            times: int = 1) -> None:
    """``times`` failures counted under ``component`` in ``metrics`` (not another registry), each logged with the
    exception that caused it."""
    assert errors(metrics, component) == times
    assert caplog.text.count(message) == times


def test_begin_names_its_span_request_unless_told_otherwise(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    recorder.finish(recorder.begin(), "/p", "GET", "200")
    recorder.finish(recorder.begin_with(recorder.tracing.tracer()), "/p", "GET", "200")
    recorder.finish(recorder.begin("GET /p"), "/p", "GET", "200")
    assert [s.name for s in exporter.get_finished_spans()] == ["request", "request", "GET /p"]


class _SpanWithoutContext:
    def get_span_context(self) -> Any:
        raise RuntimeError("no span context")


def test_a_foreign_span_that_fails_is_counted_under_tracing_and_the_request_goes_on(
        metrics: Metrics, provider: TracerProvider, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin_in_span(_SpanWithoutContext())
    counted_once_and_logged(metrics, "tracing", "RuntimeError('no span context')", caplog)
    assert tl.trace_id is None
    tl.span = tl.tracer = None
    recorder.finish(tl, "/p", "GET", "200")
    assert metrics.registry.get_sample_value(
        "aiwatch_request_duration_seconds_count",
        {"service": "svc", "route": "/p", "method": "GET", "status": "200", "traffic_class": "realtime"}) == 1


def test_an_in_flight_gauge_that_fails_per_request_is_counted_under_metrics(
        metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="svc")

    def broken(amount: float) -> None:
        raise RuntimeError(f"gauge down {amount:+g}")

    monkeypatch.setattr(recorder, "_in_flight", broken)
    tl = recorder.begin()
    counted_once_and_logged(metrics, "metrics", "RuntimeError('gauge down +1')", caplog)
    recorder.finish(tl, "/p", "GET", "200")  # the metrics of finish are one block: it stops at the gauge
    assert errors(metrics, "metrics") == 2 and "RuntimeError('gauge down -1')" in caplog.text


def test_a_server_span_that_fails_to_end_is_counted_under_tracing(
        metrics: Metrics, provider: TracerProvider, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin()
    assert tl.owns_span
    started, tl.span = tl.span, _SpanThatFailsToEnd()
    recorder.finish(tl, "/p", "GET", "200")
    counted_once_and_logged(metrics, "tracing", "RuntimeError('exporter down')", caplog)
    assert timing.current_timeline() is None
    started.end()


def test_start_up_metric_failures_are_logged_with_their_cause(
        metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    real_child = metrics.child

    def child(metric: Any, labels: Any) -> Any:
        if metric is metrics.requests_in_flight:
            raise RuntimeError("no in-flight family")
        if metric is metrics.slow_threshold:
            raise RuntimeError("no threshold family")
        return real_child(metric, labels)

    monkeypatch.setattr(metrics, "child", child)
    RequestRecorder(metrics, service="svc")
    assert errors(metrics, "metrics") == 2
    assert "RuntimeError('no in-flight family')" in caplog.text
    assert "RuntimeError('no threshold family')" in caplog.text


def test_the_model_label_has_one_budget_for_the_recorder_set_model_and_phases(metrics: Metrics) -> None:
    recorder = make_recorder(service="svc", metrics=metrics, model="base", max_label_values=1)
    assert recorder.model == "base"
    tl = recorder.begin()
    set_model("other")  # "base" took the only place
    assert tl.model == OVERFLOW
    with aiwatch.phase("inference", model="third"):
        pass
    recorder.finish(tl, "/p", "GET", "200")
    assert phase_sum(metrics.registry, "inference", model=OVERFLOW) is not None
    assert phase_sum(metrics.registry, "inference", model="third") is None


def test_a_phase_model_admitted_first_leaves_no_room_for_set_model(metrics: Metrics) -> None:
    recorder = make_recorder(service="svc", metrics=metrics, max_label_values=1)
    tl = recorder.begin()
    with aiwatch.phase("inference", model="first"):
        pass
    recorder.finish(tl, "/p", "GET", "200")
    tl = recorder.begin()
    set_model("second")
    assert tl.model == OVERFLOW
    recorder.finish(tl, "/p", "GET", "200")


def test_phase_names_share_one_budget_and_overhead_is_never_folded(metrics: Metrics) -> None:
    recorder = make_recorder(service="svc", metrics=metrics, max_label_values=1)
    timing.set_default_recorder(recorder)
    try:
        record_phase("queue", 0.25)  # outside a request: admitted through the same guard
    finally:
        timing.set_default_recorder(None)
    tl = recorder.begin()
    with aiwatch.phase("inference"):
        pass
    recorder.finish(tl, "/p", "GET", "200")
    assert background_sum(metrics.registry, "queue") == 0.25
    assert phase_sum(metrics.registry, "inference") is None
    assert phase_sum(metrics.registry, OVERFLOW) is not None
    assert phase_sum(metrics.registry, "overhead") is not None


def test_only_admitted_phase_labels_are_cached(metrics: Metrics) -> None:
    # a name folded into the overflow is folded again next time: names made from data cannot grow the cache
    recorder = make_recorder(service="svc", metrics=metrics, max_label_values=1)
    for name in ("kept", "data-1", "data-2"):
        tl = recorder.begin()
        with aiwatch.phase(name):
            pass
        recorder.finish(tl, "/p", "GET", "200")
    assert set(recorder._phase_children) == {("kept", ""), ("overhead", "")}


def test_an_async_phase_records_the_error_that_left_it_on_its_span(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)

    async def failing() -> None:
        tl = recorder.begin()
        try:
            async with aiwatch.phase("inference"):
                raise KeyError("missing feature")
        except KeyError:
            pass
        recorder.finish(tl, "/p", "GET", "500")

    asyncio.run(failing())
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "inference"]
    assert span.status.status_code is trace.StatusCode.ERROR and span.status.description == "KeyError"
    assert [e.attributes["exception.message"] for e in span.events if e.attributes] == ["'missing feature'"]


def test_a_decorated_coroutine_function_is_timed_while_it_runs(recorder: RequestRecorder,
                                                              clock: ManualClock) -> None:
    @aiwatch.phase("inference")
    async def infer() -> str:
        clock.advance(0.5)
        return "done"

    assert inspect.iscoroutinefunction(infer)
    tl = recorder.begin()
    assert asyncio.run(infer()) == "done"
    assert tl.phases == {("inference", recorder.model): 0.5}
    recorder.finish(tl, "/p", "GET", "200")


def test_phase_names_are_checked_and_only_valid_ones_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "_valid_names", set())
    monkeypatch.setattr(timing, "_MAX_CACHED_CHILDREN", 2)
    for name in ("first", "second", "third"):
        aiwatch.phase(name)
    assert timing._valid_names == {"first", "second"}  # the cache is bounded: the third is checked every time
    for bad in (42, "", "two words"):
        with pytest.raises(ValueError, match="phase name must be a non-empty token"):
            aiwatch.phase(bad)  # type: ignore[arg-type]


def test_a_phase_name_longer_than_a_label_value_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint timing the tool its request body names (``phase(f"tool.{tool}")``), through uvicorn: the names
    were remembered as valid up to 10 000 of them whatever their length, for the process's life (3 000 requests
    naming 50 kB tools: 150 M characters, +145 MiB). A name longer than any label value (which the guard folds
    anyway) is checked each time instead; the phase is still recorded, under ``__overflow__``."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from aiwatch.cardinality import MAX_VALUE_LENGTH
    from tests.servers import uvicorn_in_thread

    async def call(request: Request) -> JSONResponse:
        with aiwatch.phase(f"tool.{(await request.json())['tool']}"):
            pass
        return JSONResponse({"ok": True})

    monkeypatch.setattr(timing, "_valid_names", set())
    registry = CollectorRegistry()
    app = aiwatch.instrument(Starlette(routes=[Route("/call", call, methods=["POST"])]), registry=registry,
                             service="tools")
    with uvicorn_in_thread(app) as (port, _), httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(200):
            assert client.post("/call", json={"tool": f"{i}-" + "x" * 20_000}).status_code == 200
        assert client.post("/call", json={"tool": "search"}).status_code == 200
    assert timing._valid_names == {"tool.search"}
    assert max(map(len, timing._valid_names)) <= MAX_VALUE_LENGTH
    assert registry.get_sample_value("aiwatch_phase_duration_seconds_count", {
        "service": "tools", "model": "", "model_version": "", "phase": OVERFLOW}) == 200.0


def test_an_outer_phase_is_exclusive_of_every_phase_inside_it(recorder: RequestRecorder, clock: ManualClock) -> None:
    tl = recorder.begin()
    with aiwatch.phase("outer"):
        clock.advance(0.25)
        for seconds in (0.5, 1.0):
            with aiwatch.phase("inner"):
                clock.advance(seconds)
    assert tl.phases == {("outer", recorder.model): 0.25, ("inner", recorder.model): 1.5}
    recorder.finish(tl, "/p", "GET", "200")


def test_an_outer_phase_shorter_than_what_was_recorded_inside_it_is_zero(recorder: RequestRecorder,
                                                                         clock: ManualClock) -> None:
    tl = recorder.begin()
    with aiwatch.phase("outer"):
        clock.advance(1.0)
        record_phase("remote", 5.0)  # measured elsewhere, longer than the phase around it
    assert tl.phases == {("remote", recorder.model): 5.0, ("outer", recorder.model): 0.0}
    recorder.finish(tl, "/p", "GET", "200")


def test_record_phase_inside_a_request_keeps_its_model(recorder: RequestRecorder) -> None:
    tl = recorder.begin()
    record_phase("inference", 0.5, model="ranker")
    assert tl.phases == {("inference", "ranker"): 0.5}
    recorder.finish(tl, "/p", "GET", "200")


def test_overhead_of_exactly_zero_is_not_a_clamp_and_a_negative_one_is(metrics: Metrics, clock: ManualClock) -> None:
    recorder = RequestRecorder(metrics, service="svc")

    def clamped() -> float:
        return metrics.registry.get_sample_value("aiwatch_overhead_clamped_total", {"service": "svc"}) or 0.0

    tl = recorder.begin()
    with aiwatch.phase("inference"):
        clock.advance(0.5)
    recorder.finish(tl, "/p", "GET", "200")
    assert clamped() == 0.0 and phase_sum(metrics.registry, "overhead") == 0.0
    tl = recorder.begin()
    record_phase("remote", 5.0)
    clock.advance(1.0)
    recorder.finish(tl, "/p", "GET", "200")
    assert clamped() == 1.0 and phase_sum(metrics.registry, "overhead") == 0.0
    assert errors(metrics, "metrics") == 0.0


def test_an_untraced_request_has_no_exemplars(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()
    with aiwatch.phase("inference"):
        pass
    recorder.finish(tl, "/p", "GET", "200")
    assert [s for m in metrics.registry.collect() for s in m.samples if s.exemplar is not None] == []


def test_slow_counters_add_a_phase_over_models_and_share_the_phase_budget(metrics: Metrics,
                                                                          clock: ManualClock) -> None:
    recorder = make_recorder(service="svc", metrics=metrics, max_label_values=1, slow_threshold=1.0)

    def slow_seconds(phase: str) -> float | None:
        return metrics.registry.get_sample_value("aiwatch_slow_phase_seconds_total",
                                                 {"service": "svc", "phase": phase})

    tl = recorder.begin()  # fast: admits "kept", the only phase name there is room for
    with aiwatch.phase("kept"):
        pass
    recorder.finish(tl, "/p", "GET", "200")
    tl = recorder.begin()
    record_phase("other", 0.5)  # first: a budget of its own would have room for it
    record_phase("kept", 1.0, model="a")
    record_phase("kept", 2.0, model="b")
    clock.advance(4.0)
    recorder.finish(tl, "/p", "GET", "200")
    assert slow_seconds("kept") == 3.0
    assert slow_seconds("other") is None and slow_seconds(OVERFLOW) == 0.5


def test_a_phase_span_failing_after_its_request_finished_is_counted_in_its_requests_metrics(
        metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # the phase is its request's (it was opened there): its failures count there, and the phase itself, which
    # ended too late to be in the request, counts as the phase's error (before: the default metrics', and the phase
    # went into the background histogram as if no request had run it)
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin_with(None, "GET")
    tl.tracer, tl.span = _TracerOfFailingSpans(), object()
    before = errors(default_metrics(), "tracing")
    open_phase = aiwatch.phase("features")
    open_phase.__enter__()
    tl.tracer = tl.span = None
    recorder.finish(tl, "/p", "GET", "200")  # the request ends with the phase still open
    open_phase.__exit__(None, None, None)
    assert errors(metrics, "tracing") == 1 and errors(metrics, "phase") == 1
    assert errors(default_metrics(), "tracing") == before
    assert "RuntimeError('exporter down')" in caplog.text


async def test_a_phase_closed_by_asyncio_in_a_task_of_its_own_while_its_request_runs_is_the_requests(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter,
        caplog: pytest.LogCaptureFixture) -> None:
    """An async generator holding a phase, dropped without ``aclose()``: asyncio closes it in a task of its own, in a
    copy of the context it was dropped in. Before, the phase's end there failed to detach its span (OpenTelemetry
    logged "Failed to detach context" with a traceback); now its span ends there, and its time is its request's,
    which is still running."""
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin()

    async def tokens() -> Any:
        with aiwatch.phase("generate"):
            yield 1
            yield 2

    dropped = tokens()
    assert await dropped.__anext__() == 1
    del dropped
    for _ in range(100):  # asyncio's finalizer hook has the generator closed in a task: a loop iteration or two
        if ("generate", "") in tl.phases:
            break
        await asyncio.sleep(0)
    assert ("generate", "") in tl.phases
    recorder.finish(tl, "/p", "GET", "200")
    assert "Failed to detach context" not in caplog.text
    assert errors(metrics, "phase") == 0 and errors(metrics, "tracing") == 0
    assert sorted(span.name for span in exporter.get_finished_spans()) == ["generate", "request"]


def test_failures_of_phase_spans_and_phase_metrics_are_logged_with_their_cause(
        metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin_with(None, "GET")
    tl.tracer, tl.span = _BrokenTracer(), object()
    with aiwatch.phase("features"):
        pass
    tl.tracer, tl.span = _TracerOfFailingSpans(), object()
    with aiwatch.phase("features"):
        pass
    tl.tracer = tl.span = None
    recorder.finish(tl, "/p", "GET", "200")
    assert errors(metrics, "tracing") == 2
    assert "RuntimeError('tracer down')" in caplog.text and "RuntimeError('exporter down')" in caplog.text


def test_a_failing_phase_metric_outside_a_request_is_logged_with_its_cause(
        metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="worker")
    timing.set_default_recorder(recorder)

    class Broken:
        def labels(self, *args: Any) -> Any:
            raise RuntimeError("no histogram")

    monkeypatch.setattr(metrics, "background_phase_duration", Broken())
    try:
        record_phase("queue", 0.5)
    finally:
        timing.set_default_recorder(None)
    assert "RuntimeError('no histogram')" in caplog.text


def test_the_default_recorder_is_made_once_on_first_use() -> None:
    timing.set_default_recorder(None)
    first = timing.default_recorder()
    assert isinstance(first, RequestRecorder) and timing.default_recorder() is first


def test_a_timeline_names_its_recorders_service(recorder: RequestRecorder) -> None:
    tl = recorder.begin()
    assert tl.service == recorder.service == "svc" and timing.current_timeline() is tl
    recorder.finish(tl, "/p", "GET", "200")


# ------------------------------------------------------------------- what the request's span is told besides


def aiwatch_attributes(span: Any) -> dict[str, Any]:
    return {k: v for k, v in (span.attributes or {}).items() if k.startswith("aiwatch.")}


def test_a_traced_requests_span_names_its_traffic_class_model_version_and_fallbacks(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider,
                               traffic_classes=TrafficClasses(["realtime", "batch"], routes={}))
    tl = recorder.begin()
    set_model("ranker", "v2")
    tl.traffic_class = "batch"
    aiwatch.degraded("cached_prediction")
    aiwatch.degraded("smaller_model", "tiny")
    recorder.finish(tl, "/p", "GET", "200")
    recorder.finish(recorder.begin(), "/p", "GET", "200")  # default class, no version, no fallback: nothing to add
    tl = recorder.begin()
    tl.traffic_class = "batch"  # only the class differs from the defaults
    recorder.finish(tl, "/p", "GET", "200")
    tl = recorder.begin()
    set_model("ranker", "v3")  # only the version
    recorder.finish(tl, "/p", "GET", "200")
    tl = recorder.begin()
    aiwatch.degraded("default_answer")  # only a fallback
    recorder.finish(tl, "/p", "GET", "200")
    assert [aiwatch_attributes(s) for s in exporter.get_finished_spans()] == [
        {"aiwatch.traffic_class": "batch", "aiwatch.model.version": "v2",
         "aiwatch.degraded.reason": ("cached_prediction", "smaller_model")},
        {},
        {"aiwatch.traffic_class": "batch"},
        {"aiwatch.model.version": "v3"},
        {"aiwatch.degraded.reason": ("default_answer",)},
    ]
    assert errors(metrics, "tracing") == 0


def test_a_fallback_marked_twice_around_set_model_is_named_once_on_the_span(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    # the span listed a reason once per (reason, model) entry: marked before and after set_model(), the same
    # fallback was named twice, while the counter counted the response once
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin()
    aiwatch.degraded("cached_prediction")
    set_model("ranker")
    aiwatch.degraded("cached_prediction")
    aiwatch.degraded("cached_prediction", "tiny")  # another model, the same reason: still one reason on the span
    recorder.finish(tl, "/p", "GET", "200")
    [span] = exporter.get_finished_spans()
    assert aiwatch_attributes(span) == {"aiwatch.degraded.reason": ("cached_prediction",)}
    counted = {m: metrics.registry.get_sample_value(
        "aiwatch_degraded_responses_total", {"service": "svc", "model": m, "reason": "cached_prediction"})
        for m in ("", "ranker", "tiny")}
    assert counted == {"": None, "ranker": 1.0, "tiny": 1.0}


class _SpanRefusingAttributes:
    def __init__(self) -> None:
        self.ended = False

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: Any) -> None:
        raise RuntimeError("attribute refused")

    def get_span_context(self) -> Any:
        return trace.INVALID_SPAN_CONTEXT

    def end(self, end_time: int | None = None) -> None:
        self.ended = True


def test_a_span_refusing_the_extra_attributes_is_counted_under_tracing_and_the_request_recorded(
        metrics: Metrics, provider: TracerProvider, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    span = _SpanRefusingAttributes()
    tl = recorder.begin_in_span(span)
    set_model("ranker", "v2")
    recorder.finish(tl, "/p", "GET", "200")
    counted_once_and_logged(metrics, "tracing", "RuntimeError('attribute refused')", caplog)
    assert not span.ended  # a span aiwatch did not start is not aiwatch's to end
    assert metrics.registry.get_sample_value(
        "aiwatch_request_duration_seconds_count",
        {"service": "svc", "route": "/p", "method": "GET", "status": "200", "traffic_class": "realtime"}) == 1.0


# ------------------------------------------------------------------------------- model versions and late phases


def versioned_sum(registry: CollectorRegistry, phase: str, model: str, version: str) -> float | None:
    return registry.get_sample_value("aiwatch_phase_duration_seconds_sum",
                                     {"service": "svc", "model": model, "model_version": version, "phase": phase})


def test_a_versioned_request_labels_its_own_models_phases_overhead_and_late_phases_only(
        metrics: Metrics, clock: ManualClock, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    registry = metrics.registry
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    for _ in range(2):  # the second request reads the children the first one cached
        tl = recorder.begin()
        set_model("ranker", "v2")
        tl.add("inference", None, 0.25)
        tl.add("features", "embedder", 0.125)
        clock.advance(0.5)
        recorder.finish(tl, "/p", "GET", "200")
        recorder.observe_late_phase(tl, "serialize", 0.0625)
    assert versioned_sum(registry, "inference", "ranker", "v2") == 0.5
    assert versioned_sum(registry, "features", "embedder", "") == 0.25  # another model's phase: no version
    assert versioned_sum(registry, "overhead", "ranker", "v2") == 0.25  # 2 x (0.5 - 0.25 - 0.125)
    assert versioned_sum(registry, "serialize", "ranker", "v2") == 0.125
    for phase in ("inference", "overhead", "serialize"):
        assert versioned_sum(registry, phase, "ranker", "") is None
    assert versioned_sum(registry, "features", "embedder", "v2") is None
    trace_ids = {f"{s.context.trace_id:032x}" for s in exporter.get_finished_spans() if s.context is not None}
    exemplars = {(s.labels["phase"], s.labels["model_version"], s.exemplar.labels["trace_id"])
                 for m in registry.collect() if m.name == "aiwatch_phase_duration_seconds"
                 for s in m.samples if s.exemplar is not None}
    assert {(phase, version) for phase, version, _ in exemplars} == {
        ("inference", "v2"), ("features", ""), ("overhead", "v2")}  # a late phase has no exemplar
    assert {trace_id for _, _, trace_id in exemplars} <= trace_ids

    # the same phases of the same model without a version afterwards: not counted under v2
    tl = recorder.begin()
    set_model("ranker")
    tl.add("inference", None, 0.25)
    clock.advance(0.25)
    recorder.finish(tl, "/p", "GET", "200")
    recorder.observe_late_phase(tl, "serialize", 0.0625)
    assert versioned_sum(registry, "inference", "ranker", "") == 0.25
    assert versioned_sum(registry, "serialize", "ranker", "") == 0.0625
    assert versioned_sum(registry, "inference", "ranker", "v2") == 0.5
    assert versioned_sum(registry, "serialize", "ranker", "v2") == 0.125


def test_a_late_phase_of_a_version_seen_first_after_the_request_is_labelled_with_it(
        metrics: Metrics, clock: ManualClock) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()
    set_model("ranker", "v3")
    recorder._versioned_children.clear()  # as when the cache was full: no children for this version
    recorder.observe_late_phase(tl, "serialize", 0.5)
    recorder.observe_late_phase(tl, "serialize", 0.25)
    assert versioned_sum(metrics.registry, "serialize", "ranker", "v3") == 0.75
    assert versioned_sum(metrics.registry, "serialize", "ranker", "") is None


def test_a_late_phase_that_fails_to_record_is_counted_under_metrics_and_logged(
        metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()
    recorder.finish(tl, "/p", "GET", "200")

    def refuse(child: Any, seconds: float, exemplar: Any = None) -> None:
        raise RuntimeError("histogram refused")

    monkeypatch.setattr(timing, "observe", refuse)
    recorder.observe_late_phase(tl, "serialize", 0.5)
    counted_once_and_logged(metrics, "metrics", "RuntimeError('histogram refused')", caplog)


#: Clock readings an integration could hand over by mistake (None is "now", True is 1 s after a start at 0)
BAD_ENDS = [p for p in BAD_SECONDS if p.id not in ("None", "True")]


@pytest.mark.parametrize("bad", BAD_ENDS)
def test_a_request_whose_end_is_no_time_after_its_start_keeps_its_other_signals(metrics: Metrics, bad: Any) -> None:
    # before: a NaN, infinite or negative duration went into the request and overhead histograms (their _sum NaN or
    # infinite for good, a negative in the lowest bucket); 10**400, a Decimal or a str raised out of finish(),
    # documented never to raise, leaving aiwatch_requests_in_flight at 1 and the request's phases unrecorded
    recorder = RequestRecorder(metrics, service="svc", model="m")
    tl = recorder.begin(start=0.0)
    tl.add("inference", None, 0.25)
    aiwatch.degraded("fallback")
    recorder.finish(tl, "/p", "GET", "200", end=bad)
    tl = recorder.begin(start=0.0)
    recorder.finish(tl, "/p", "GET", "200", end=0.5)
    r = metrics.registry
    labels = {"service": "svc", "route": "/p", "method": "GET", "status": "200", "traffic_class": "realtime"}
    assert (r.get_sample_value("aiwatch_request_duration_seconds_sum", labels),
            r.get_sample_value("aiwatch_request_duration_seconds_count", labels)) == (0.5, 1)
    assert phase_sum(r, "overhead", "m") == 0.5
    assert phase_sum(r, "inference", "m") == 0.25
    assert r.get_sample_value("aiwatch_degraded_responses_total",
                              {"service": "svc", "model": "m", "reason": "fallback"}) == 1
    assert r.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0
    assert errors(metrics, "metrics") == 1


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_a_late_phase_that_is_no_number_of_seconds_is_counted_and_left_out(metrics: Metrics, bad: Any) -> None:
    # before: NaN made the phase's _sum NaN for good; a negative, 2**53+1 or a timestamp went in as given
    recorder = RequestRecorder(metrics, service="svc", model="m")
    tl = recorder.begin()
    recorder.finish(tl, "/p", "GET", "200")
    recorder.observe_late_phase(tl, "serialize", bad)
    recorder.observe_late_phase(tl, "serialize", 0.25)
    assert phase_sum(metrics.registry, "serialize", "m") == 0.25
    assert errors(metrics, "metrics") == 1


@pytest.mark.parametrize("bad", BAD_ENDS)
def test_a_chunk_whose_time_is_no_time_after_the_last_is_counted_and_left_out(metrics: Metrics, bad: Any) -> None:
    # before: a NaN or infinite chunk time made the gap histogram's _sum NaN for good (the next gap from it too)
    # and a negative gap went in as given; 10**400, a Decimal or a str were counted but also lost the next gap
    recorder = RequestRecorder(metrics, service="svc")
    chunks = ChunkTimer(recorder, 0.0, "/stream")
    chunks.chunk(0.125)
    chunks.chunk(0.25)
    chunks.chunk(bad)
    chunks.chunk(0.5)
    r = metrics.registry
    assert r.get_sample_value("aiwatch_time_to_first_chunk_seconds_sum", {"service": "svc", "route": "/stream"}) \
        == 0.125
    assert (r.get_sample_value("aiwatch_time_between_chunks_seconds_sum", {"service": "svc", "route": "/stream"}),
            r.get_sample_value("aiwatch_time_between_chunks_seconds_count", {"service": "svc", "route": "/stream"})) \
        == (0.375, 2)
    assert errors(metrics, "metrics") == 1


@pytest.mark.parametrize(("model", "version"), [(["a"], ""), ("m2", ["v"]), ({}, "v2")],
                         ids=["model", "version", "model-with-a-version"])
def test_set_model_with_a_label_the_guard_cannot_take_is_counted_and_changes_nothing(
        metrics: Metrics, model: Any, version: Any, caplog: pytest.LogCaptureFixture) -> None:
    # a list raised TypeError (unhashable) into the app's handler
    recorder = RequestRecorder(metrics, service="svc", model="m")
    tl = recorder.begin()
    set_model("m1", "v1")
    set_model(model, version)
    assert (tl.model, tl.version) == ("m1", "v1")
    recorder.finish(tl, "/p", "GET", "200")
    assert errors(metrics, "metrics") == 1
    assert "TypeError(\"unhashable type:" in caplog.text


@pytest.mark.parametrize("how", ["with", "decorator", "record_phase"])
def test_a_phase_whose_model_is_no_label_is_counted_and_recorded_for_the_requests_model(
        metrics: Metrics, how: str, caplog: pytest.LogCaptureFixture) -> None:
    # a list as the model raised TypeError (unhashable) into the app: at the phase's end, or from record_phase
    recorder = RequestRecorder(metrics, service="svc", model="m")
    tl = recorder.begin()
    if how == "with":
        with aiwatch.phase("features", model=["a"]):  # type: ignore[arg-type]
            pass
    elif how == "decorator":
        aiwatch.phase("features", model={})(lambda: None)()  # type: ignore[arg-type]
    else:
        record_phase("features", 0.25, model=["a"])  # type: ignore[arg-type]
    recorder.finish(tl, "/p", "GET", "200")
    assert errors(metrics, "phase") == 1
    assert f"TypeError(\"phase 'features' got a model that is no label: {['a'] if how != 'decorator' else {}}\")" \
        in caplog.text
    assert metrics.registry.get_sample_value("aiwatch_phase_duration_seconds_count", {
        "service": "svc", "model": "m", "model_version": "", "phase": "features"}) == 1


def test_a_phase_made_outside_a_request_with_a_model_that_is_no_label_is_counted_in_the_default_metrics(
        metrics: Metrics) -> None:
    # a decorator is made at import, outside any request
    timing.set_default_recorder(RequestRecorder(metrics, service="svc", model="m"))
    decorated = aiwatch.phase("features", model=["a"])(lambda: 7)  # type: ignore[arg-type]
    assert errors(metrics, "phase") == 1
    assert decorated() == 7


def test_numpy_clock_readings_and_sizes_are_recorded_as_the_numbers_they_are(metrics: Metrics) -> None:
    # the checks' slow path: readings and sizes that are not a plain float or int but are good numbers
    recorder = RequestRecorder(metrics, service="svc", model="m")
    recorder.finish(recorder.begin(start=np.float64(1.0)), "/p", "POST", "200", end=np.float64(1.75),
                    request_bytes=np.int64(12), response_bytes=np.uint16(30))
    r = metrics.registry
    labels = {"service": "svc", "route": "/p", "method": "POST", "status": "200", "traffic_class": "realtime"}
    assert r.get_sample_value("aiwatch_request_duration_seconds_sum", labels) == 0.75
    sizes = {"service": "svc", "route": "/p", "method": "POST"}
    assert (r.get_sample_value("aiwatch_request_size_bytes_sum", sizes),
            r.get_sample_value("aiwatch_response_size_bytes_sum", sizes)) == (12, 30)
    assert errors(metrics, "metrics") == 0


def test_a_refused_duration_or_size_is_logged_with_what_it_was(metrics: Metrics, caplog: pytest.LogCaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)  # both logged, though in one burst
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin(start=1.0)
    recorder.finish(tl, "/p", "GET", "200", end=math.nan, request_bytes=-5, response_bytes=-7)
    assert "a request's duration must be 0 to 1e9 seconds; it started at 1.0 and ended at nan" in caplog.text
    assert "request_bytes must be an integer from 0 to 2**53, got -5" in caplog.text
    assert "response_bytes must be an integer from 0 to 2**53, got -7" in caplog.text
    recorder.observe_late_phase(tl, "serialize", -1)
    assert "phase 'serialize''s duration must be a number of seconds from 0 to 1e9, got -1" in caplog.text
    sizes = {"service": "svc", "route": "/p", "method": "GET"}
    assert metrics.registry.get_sample_value("aiwatch_response_size_bytes_count", sizes) == 0  # its child made, empty
    recorder.observe_late_phase(tl, "serialize", 2)  # an int: a good number of seconds, on the checks' slow path
    assert phase_sum(metrics.registry, "serialize", "") == 2.0
    with pytest.raises(ValueError, match=f"^slow_threshold {NOT_A_PERIOD}nan$"):
        RequestRecorder(metrics, slow_threshold=math.nan)


@pytest.mark.parametrize("sizes", [{"request_bytes": -5}, {"response_bytes": 10**400}, {"request_bytes": 1.5},
                                   {"response_bytes": 1.5}, {"response_bytes": True}])
def test_a_refused_size_is_counted_as_a_metrics_error_on_the_recorders_own_metrics(metrics: Metrics,
                                                                                     sizes: dict[str, Any]) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    recorder.finish(recorder.begin(), "/p", "POST", "200", **sizes)
    assert errors(metrics, "metrics") == 1
    assert metrics.registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "svc", "route": "/p", "method": "POST", "status": "200", "traffic_class": "realtime"}) == 1
    sizes_labels = {"service": "svc", "route": "/p", "method": "POST"}
    for size in ("request", "response"):  # the refused size observed nowhere
        assert metrics.registry.get_sample_value(f"aiwatch_{size}_size_bytes_count", sizes_labels) == 0


def test_a_request_size_alone_is_recorded_without_a_response_size(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    recorder.finish(recorder.begin(), "/p", "POST", "200", request_bytes=100)
    recorder.finish(recorder.begin(), "/p", "POST", "200", response_bytes=40)
    labels = {"service": "svc", "route": "/p", "method": "POST"}
    assert metrics.registry.get_sample_value("aiwatch_request_size_bytes_sum", labels) == 100
    assert metrics.registry.get_sample_value("aiwatch_response_size_bytes_sum", labels) == 40
    assert metrics.registry.get_sample_value("aiwatch_request_size_bytes_count", labels) == 1


def test_a_late_phase_of_an_uncached_version_leaves_the_unversioned_phases_alone(
        metrics: Metrics, clock: ManualClock) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()
    set_model("ranker", "v3")
    recorder.finish(tl, "/p", "GET", "200")
    recorder._versioned_children.clear()  # as when the cache was full: no children for this version
    recorder.observe_late_phase(tl, "serialize", 0.5)
    tl = recorder.begin()
    set_model("ranker")  # the same model and late phase, without a version
    recorder.finish(tl, "/p", "GET", "200")
    recorder.observe_late_phase(tl, "serialize", 0.25)
    assert versioned_sum(metrics.registry, "serialize", "ranker", "v3") == 0.5
    assert versioned_sum(metrics.registry, "serialize", "ranker", "") == 0.25


def overflows(metrics: Metrics, label: str) -> float:
    return metrics.registry.get_sample_value("aiwatch_label_overflow_total", {"label": label}) or 0.0


def test_a_recorders_model_version_labels_its_requests_and_passes_the_version_bound(
        metrics: Metrics, clock: ManualClock) -> None:
    guard = guard_for(metrics, 1)
    recorder = RequestRecorder(metrics, service="svc", model="ranker", guard=guard, model_version="v1")
    tl = recorder.begin()
    tl.add("inference", None, 0.25)
    clock.advance(0.5)
    recorder.finish(tl, "/p", "GET", "200")
    assert versioned_sum(metrics.registry, "inference", "ranker", "v1") == 0.25
    assert versioned_sum(metrics.registry, "overhead", "ranker", "v1") == 0.25
    assert versioned_sum(metrics.registry, "inference", "ranker", "") is None
    # another recorder on the registry with another version: past the bound of one model_version value
    other = RequestRecorder(metrics, service="svc", model="ranker", guard=guard, model_version="v2")
    assert other.model_version == OVERFLOW
    assert overflows(metrics, "model_version") == 1 and overflows(metrics, "model") == 0


def test_set_model_versions_have_their_own_bound_and_a_request_without_one_takes_none_of_it(
        metrics: Metrics) -> None:
    recorder = make_recorder(service="svc", metrics=metrics, max_label_values=1)
    for version in ("", "v1", "v2"):
        tl = recorder.begin()
        set_model("ranker", version)
        tl.add("inference", None, 0.25)
        recorder.finish(tl, "/p", "GET", "200")
    assert versioned_sum(metrics.registry, "inference", "ranker", "") == 0.25
    assert versioned_sum(metrics.registry, "inference", "ranker", "v1") == 0.25
    assert versioned_sum(metrics.registry, "inference", "ranker", "v2") is None
    assert versioned_sum(metrics.registry, "inference", "ranker", OVERFLOW) == 0.25
    assert overflows(metrics, "model_version") == 1 and overflows(metrics, "model") == 0


def test_stream_histograms_fold_routes_past_the_bound_the_request_histograms_share(metrics: Metrics) -> None:
    recorder = make_recorder(service="svc", metrics=metrics, max_label_values=1)
    recorder.finish(recorder.begin(), "/a", "GET", "200")  # "/a" takes the only place
    first_chunk, between_chunks = recorder.stream_children("/b")
    first_chunk.observe(0.5)
    between_chunks.observe(0.25)
    recorder.stream_children("/a")[0].observe(0.125)

    def chunk_sum(name: str, route: str) -> float | None:
        return metrics.registry.get_sample_value(f"aiwatch_{name}_seconds_sum", {"service": "svc", "route": route})

    assert chunk_sum("time_to_first_chunk", OVERFLOW) == 0.5
    assert chunk_sum("time_between_chunks", OVERFLOW) == 0.25
    assert chunk_sum("time_to_first_chunk", "/a") == 0.125
    assert chunk_sum("time_to_first_chunk", "/b") is None
    assert overflows(metrics, "route") == 1



def test_routes_folded_for_traffic_class_rules_share_the_route_label_budget_and_overflow_count(
        metrics: Metrics) -> None:
    recorder = make_recorder(service="svc", metrics=metrics, max_label_values=1,
                             traffic_classes=TrafficClasses(["realtime", "batch"], routes={"/bulk/*": "batch"}))
    recorder.finish(recorder.begin(), "/bulk/a", "POST", "200")  # "/bulk/a" takes the only place
    recorder.finish(recorder.begin(), "/bulk/b", "POST", "200")  # matched as itself, then folded

    def requests(route: str, traffic_class: str) -> float | None:
        return metrics.registry.get_sample_value(
            "aiwatch_request_duration_seconds_count",
            {"service": "svc", "route": route, "method": "POST", "status": "200", "traffic_class": traffic_class})

    assert requests("/bulk/a", "batch") == 1.0
    assert requests(OVERFLOW, "batch") == 1.0  # its own rule's class, though its label folded
    assert requests(OVERFLOW, "realtime") is None
    assert recorder.guard.known("route") == frozenset({"/bulk/a"})
    assert overflows(metrics, "route") == 1.0
    recorder.stream_children("/c")[0].observe(0.5)  # the stream histograms fold routes under the same budget
    assert overflows(metrics, "route") == 2.0


class _TracerThatFails:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer down")


def test_a_server_span_that_fails_to_start_is_logged_with_its_cause_and_the_request_recorded(
        metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin_with(_TracerThatFails())
    counted_once_and_logged(metrics, "tracing", "RuntimeError('tracer down')", caplog)
    with aiwatch.phase("inference"):  # no server span: no phase span, and no second failure
        pass
    recorder.finish(tl, "/p", "GET", "200")
    assert errors(metrics, "tracing") == 1
    assert phase_sum(metrics.registry, "inference") is not None
    assert metrics.registry.get_sample_value(
        "aiwatch_request_duration_seconds_count",
        {"service": "svc", "route": "/p", "method": "GET", "status": "200", "traffic_class": "realtime"}) == 1.0


def test_a_traced_requests_span_carries_its_token_usage(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin()
    aiwatch.record_tokens(input_tokens=12, model="chat-small")
    aiwatch.record_tokens(output_tokens=3)
    recorder.finish(tl, "/p", "POST", "200")
    (span,) = exporter.get_finished_spans()
    assert {k: v for k, v in (span.attributes or {}).items() if k.startswith("gen_ai.")} == {
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3, "gen_ai.request.model": "chat-small"}
    assert errors(metrics, "tracing") == 0


def test_a_traced_requests_span_takes_the_recorders_model_when_no_token_call_names_one(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", model="chat-small", tracer_provider=provider)
    tl = recorder.begin()
    aiwatch.record_tokens(input_tokens=12, output_tokens=3)
    recorder.finish(tl, "/p", "POST", "200")
    (span,) = exporter.get_finished_spans()
    assert {k: v for k, v in (span.attributes or {}).items() if k.startswith("gen_ai.")} == {
        "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3, "gen_ai.request.model": "chat-small"}
    assert errors(metrics, "tracing") == 0


def test_a_traced_requests_span_names_the_model_requested_where_its_label_is_folded(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", model="base", guard=guard_for(metrics, 1),
                               tracer_provider=provider)
    tl = recorder.begin()  # the recorder's model, admitted
    aiwatch.record_tokens(input_tokens=1, output_tokens=1)
    recorder.finish(tl, "/p", "POST", "200")
    tl = recorder.begin()  # past the bound of one model: the labels fold, the span keeps the name
    aiwatch.record_tokens(input_tokens=2, output_tokens=1, model="chat-large")
    recorder.finish(tl, "/p", "POST", "200")
    tl = recorder.begin()
    aiwatch.set_model("chat-small")
    aiwatch.record_tokens(input_tokens=4, output_tokens=1)
    recorder.finish(tl, "/p", "POST", "200")
    tl = recorder.begin()  # a later call naming none counts for the model named last, on the span too
    aiwatch.record_tokens(input_tokens=8, model="embedder")
    aiwatch.record_tokens(output_tokens=1)
    recorder.finish(tl, "/p", "POST", "200")
    assert [(span.attributes or {})["gen_ai.request.model"] for span in exporter.get_finished_spans()] == [
        "base", "chat-large", "chat-small", "embedder"]
    assert metrics.registry.get_sample_value(
        "aiwatch_gen_ai_token_usage_tokens_sum", {"service": "svc", "model": OVERFLOW, "token_type": "input"}) == 14


@pytest.mark.parametrize("slack", [0, 1])
def test_server_timing_at_its_limit_is_whole_and_one_character_under_it_is_cut(metrics: Metrics,
                                                                               clock: ManualClock, slack: int) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()
    tl.phases[("inference", "")] = 0.001
    tl.phases[("features", "m")] = 0.0005
    clock.advance(0.004)
    whole = "inference;dur=1.000, features;dur=0.500, overhead;dur=2.500, total;dur=4.000;desc=\"svc\""
    assert tl.server_timing(limit=len(whole) + slack) == (whole, None)
    # one character short: the first phase still fits, the second would pass the limit
    end = "overhead;dur=2.500, total;dur=4.000;desc=\"svc\""
    assert tl.server_timing(limit=len(whole) - 1) == (
        "inference;dur=1.000, " + end, f"over {len(whole) - 1} characters: 1 of 2 phase entries left out")
    # room for the shorter second entry only: the first is left out, the second kept
    limit = len("features;dur=0.500, " + end)
    assert tl.server_timing(limit=limit) == (
        "features;dur=0.500, " + end, f"over {limit} characters: 1 of 2 phase entries left out")
    # the overhead stays the time outside every phase, the left-out ones included; a given tail is used
    assert tl.server_timing(tl.start + 0.01, "overhead;dur=%.3f, total;dur=%.3f", 40) == (
        "overhead;dur=8.500, total;dur=10.000", "over 40 characters: 2 of 2 phase entries left out")
    recorder.finish(tl, "/", "GET", "200")


def test_a_phase_recorded_under_the_requests_model_keeps_it_and_one_under_none_moves(metrics: Metrics) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()
    set_model("a")
    record_phase("named", 0.125, model="a")  # names the request's model of the moment itself: stays under it
    record_phase("queue", 0.25, model="b")  # under b already, before the request's own phases move there
    record_phase("queue", 0.5)
    record_phase("plain", 0.0625)
    set_model("a")  # the same model again: nothing moves, nothing is added twice
    assert tl.phases == {("named", "a"): 0.125, ("queue", "b"): 0.25, ("queue", "a"): 0.5, ("plain", "a"): 0.0625}
    set_model("b")  # the phases that named no model move, adding up with those already under b
    assert tl.phases == {("named", "a"): 0.125, ("queue", "b"): 0.75, ("plain", "b"): 0.0625}
    recorder.finish(tl, "/", "GET", "200")


def test_a_measured_phase_is_kept_out_of_the_phase_the_app_has_open(metrics: Metrics, clock: ManualClock) -> None:
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()
    timing.add_measured_phase(tl, "deserialize", 0.125)  # no phase open
    with aiwatch.phase("handler"):
        clock.advance(1.0)
        timing.add_measured_phase(tl, "serialize", 0.25)
        timing.add_measured_phase(tl, "serialize", 0.125)
    assert tl.phases == {("deserialize", ""): 0.125, ("handler", ""): 0.625, ("serialize", ""): 0.375}
    recorder.finish(tl, "/", "GET", "200")


def test_a_phases_span_is_current_while_it_runs_and_the_requests_again_after_it(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin()
    before = trace.get_current_span()
    with aiwatch.phase("inference"):
        inside = trace.get_current_span()
        provider.get_tracer("app").start_span("app-work").end()  # the app's own span: a child of the phase's
    after = trace.get_current_span()
    recorder.finish(tl, "/", "GET", "200")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"request", "inference", "app-work"}
    assert inside.get_span_context().span_id == spans["inference"].context.span_id
    parents = {name: span.parent.span_id for name, span in spans.items() if span.parent is not None}
    assert parents["app-work"] == spans["inference"].context.span_id
    assert parents["inference"] == spans["request"].context.span_id
    assert after is before


def test_a_phase_started_inside_an_app_span_of_the_requests_trace_is_that_spans_child(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin()
    app = provider.get_tracer("app")
    with app.start_as_current_span("handler", context=trace.set_span_in_context(tl.span)), \
            aiwatch.phase("inference"):
        pass
    with aiwatch.phase("postprocess"):  # the app's span ended: the request's span is the parent again
        pass
    recorder.finish(tl, "/", "GET", "200")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"request", "handler", "inference", "postprocess"}
    parents = {name: span.parent.span_id for name, span in spans.items() if span.parent is not None}
    assert parents["handler"] == spans["request"].context.span_id
    assert parents["inference"] == spans["handler"].context.span_id
    assert parents["postprocess"] == spans["request"].context.span_id
    assert {span.context.trace_id for span in spans.values()} == {spans["request"].context.trace_id}
    assert errors(metrics, "tracing") == 0


def test_a_phase_nested_in_a_phase_under_a_span_of_another_trace_stays_the_enclosing_phases_child(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    tl = recorder.begin()
    app = provider.get_tracer("app")
    # a new root the app made inside the phase: not in the request's trace, so not the nested phase's parent
    with aiwatch.phase("features"), \
            app.start_as_current_span("elsewhere", context=trace.set_span_in_context(trace.INVALID_SPAN)), \
            aiwatch.phase("lookup"):
        pass
    recorder.finish(tl, "/", "GET", "200")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"request", "features", "elsewhere", "lookup"}
    request, features, lookup = spans["request"], spans["features"], spans["lookup"]
    assert spans["elsewhere"].context.trace_id != request.context.trace_id and spans["elsewhere"].parent is None
    assert features.parent is not None and features.parent.span_id == request.context.span_id
    assert lookup.parent is not None and lookup.parent.span_id == features.context.span_id
    assert lookup.context.trace_id == request.context.trace_id
    assert errors(metrics, "tracing") == 0


def test_the_phase_name_lock_held_at_a_fork_is_replaced_by_a_free_one_in_the_child() -> None:
    # the memo of checked names is bounded: empty it, so that what ran before in this process (a Hypothesis test's
    # thousands of names) cannot have filled it
    remembered = set(timing._valid_names)
    timing._valid_names.clear()
    try:
        held = timing._valid_lock
        with held:
            timing._renew_valid_lock()
            assert timing._valid_lock is not held and timing._valid_lock.acquire(blocking=False)
            timing._valid_lock.release()
        aiwatch.phase("a_name_checked_after_the_fork")  # checked and remembered under the new lock
        assert "a_name_checked_after_the_fork" in timing._valid_names
    finally:
        timing._valid_names.clear()
        timing._valid_names.update(remembered)


def test_a_phase_closed_in_another_thread_while_its_request_runs_is_in_no_histogram(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """A generator holding a phase, dropped unclosed and closed by the garbage collector in another thread while its
    request still runs: the phase ends at the collection, not when its work stopped, so its time is counted
    nowhere (the phase's error says to close the generator); its span is ended. Before, its end there found no phase
    open ("exited out of order") and the span never ended."""
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)

    def tokens() -> Iterator[int]:
        with aiwatch.phase("generate"):
            yield 1
            yield 2

    def request() -> tuple[RequestTimeline, Iterator[int]]:  # in a context of its own, as a server runs it
        tl = recorder.begin()
        dropped = tokens()
        assert next(dropped) == 1
        return tl, dropped

    tl, dropped = contextvars.copy_context().run(request)
    closer = threading.Thread(target=dropped.close)
    closer.start()
    closer.join()
    assert ("generate", "") not in tl.phases
    assert errors(metrics, "phase") == 1
    recorder.finish(tl, "/p", "GET", "200")
    assert sorted(span.name for span in exporter.get_finished_spans()) == ["generate", "request"]


def test_a_shared_phase_object_ended_elsewhere_by_two_requests_takes_neither_ones_phase(
        metrics: Metrics) -> None:
    """One phase object (a module's) held across the yields of two requests' generators, each step of which runs in a
    fresh copy of its request's context (Starlette's StreamingResponse): which of its two uses an end there closes
    cannot be told, so neither is taken: both are counted as out of order, as before such ends were told apart, and
    neither request gets the other's time (the first end took the second request's phase where the object kept
    only the frame it opened last)."""
    recorder = RequestRecorder(metrics, service="svc")
    shared = aiwatch.phase("generate")

    def tokens() -> Iterator[int]:
        with shared:
            yield 1

    requests = []
    for _ in range(2):
        task = contextvars.copy_context()  # the request's task
        tl = task.run(recorder.begin)
        stream = tokens()
        assert task.copy().run(next, stream) == 1  # the first step, in a worker thread
        requests.append((task, tl, stream))
    before = errors(default_metrics(), "phase")
    for task, _tl, stream in requests:
        with pytest.raises(StopIteration):
            task.copy().run(next, stream)  # the last step ends the phase
    assert errors(default_metrics(), "phase") == before + 2
    for task, tl, _stream in requests:
        assert tl.phases == {}
        task.run(recorder.finish, tl, "/p", "GET", "200")


def test_a_phase_of_a_finished_request_ended_in_its_thread_during_the_next_request_leaves_that_ones_span_current(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """A server thread that serves one request after another in one context (gunicorn's gthread workers): the first
    request's generator, holding a traced phase, dropped unclosed, is closed while the next one runs there (the
    garbage collector, collecting a reference cycle). The phase's span is ended, but the context it made current is
    not restored: that would make the first request's span current again, in the middle of the second request."""
    recorder = RequestRecorder(metrics, service="svc", tracer_provider=provider)
    thread_context = contextvars.copy_context()

    def tokens() -> Iterator[int]:
        with aiwatch.phase("generate"):
            yield 1
            yield 2

    def first() -> Iterator[int]:
        tl = recorder.begin()
        token = context.attach(trace.set_span_in_context(tl.span))  # as the middleware does while the app runs
        dropped = tokens()
        assert next(dropped) == 1
        context.detach(token)
        recorder.finish(tl, "/first", "GET", "200")
        return dropped

    def second(dropped: Iterator[int]) -> tuple[Any, Any]:
        tl = recorder.begin()
        token = context.attach(trace.set_span_in_context(tl.span))
        dropped.close()  # type: ignore[attr-defined]
        current = trace.get_current_span()
        context.detach(token)
        recorder.finish(tl, "/second", "GET", "200")
        return current, tl.span

    dropped = thread_context.run(first)
    current, own = thread_context.run(second, dropped)
    assert current is own
    assert sorted(span.name for span in exporter.get_finished_spans()) == ["generate", "request", "request"]
    assert errors(metrics, "phase") == 1


def test_a_call_made_under_a_foreign_span_that_fails_is_recorded_without_exemplar(
        metrics: Metrics, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The call's trace id (its exemplar) is read from the current span; one that fails is counted under tracing,
    and the call is timed and recorded without an exemplar."""
    import requests

    import aiwatch.client
    from tests.http.peer import peer
    from tests.spans import exemplar_trace_ids

    monkeypatch.setattr("aiwatch.safety._burst.burst_seconds", 0.0)
    class CurrentSpanWithoutContext(trace.NonRecordingSpan):  # a Span, so OpenTelemetry hands it out as current
        def get_span_context(self) -> Any:
            raise RuntimeError("no span context")

    with peer() as base, trace.use_span(CurrentSpanWithoutContext(trace.INVALID_SPAN_CONTEXT)), \
            aiwatch.client.instrument_requests(requests.Session(), service="gw", metrics=metrics) as session:
        assert session.get(f"{base}/ok").status_code == 200
    assert errors(metrics, "tracing") == 2  # trace context not injected, no trace id taken
    assert caplog.text.count("RuntimeError('no span context')") == 2
    assert metrics.registry.get_sample_value("aiwatch_network_duration_seconds_count",
                                             {"service": "gw", "peer": base.removeprefix("http://"), "phase": ""}) == 1
    assert exemplar_trace_ids(metrics.registry) == {}


def test_a_phase_a_sync_generator_opens_in_a_later_step_nests_under_the_one_it_holds_and_others_do_not(
        metrics: Metrics, clock: ManualClock) -> None:
    """Each step in a fresh copy of the request's context, as Starlette's StreamingResponse runs a sync generator:
    the phase the generator holds is open only in the first step's copy. A phase the generator opens in a later step
    is nested under it; one the code around it opens meanwhile (not inside the generator) is not."""
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()

    def tokens() -> Iterator[int]:
        with aiwatch.phase("generate"):
            for i in range(3):
                with aiwatch.phase("decode"):
                    clock.advance(0.25)
                clock.advance(0.125)
                yield i

    steps = tokens()
    for _ in range(3):
        contextvars.copy_context().run(next, steps)
        with aiwatch.phase("send"):  # the consumer's own phase, beside the generator's
            clock.advance(0.5)
    assert contextvars.copy_context().run(next, steps, None) is None  # its end, in a step of its own
    recorder.finish(tl, "/stream", "GET", "200")
    # generate is open 2.625 s, the sends between its steps included: all three decodes are its children (before,
    # only the first step's: 2.375), the sends are not (as children: 0.375), so the sends count twice and the
    # overhead is clamped, as for any two phases that overlap
    assert (phase_sum(metrics.registry, "decode"), phase_sum(metrics.registry, "generate"),
            phase_sum(metrics.registry, "send"), phase_sum(metrics.registry, "overhead")) == (0.75, 1.875, 1.5, 0.0)


def test_only_a_generators_phase_is_a_parent_across_copies_of_the_context_on_one_stack(
        metrics: Metrics, clock: ManualClock) -> None:
    """A phase crosses into another copy of the context only when a sync generator holds it (the steps above). A plain
    function's phase does not: code inside it that runs work in a context copied before the phase opened (on the same
    stack) opens phases beside it, not under it, as anywhere phases nest by context."""
    recorder = RequestRecorder(metrics, service="svc")
    tl = recorder.begin()
    earlier = contextvars.copy_context()

    def inner() -> None:
        with aiwatch.phase("inner"):
            clock.advance(2.0)

    with aiwatch.phase("outer"):
        clock.advance(1.0)
        earlier.run(inner)
    recorder.finish(tl, "/", "GET", "200")
    assert (phase_sum(metrics.registry, "outer"), phase_sum(metrics.registry, "inner")) == (3.0, 2.0)


def test_a_request_whose_route_its_integration_does_not_tell_forwards_its_own_class_without_an_error(
        metrics: Metrics) -> None:
    """Route rules are configured, but the integration gave the request no way to read its route (``route_of``
    unset: the route is known only when the request finishes): a call made in it forwards the request's own class,
    and nothing is counted as aiwatch's error."""
    recorder = RequestRecorder(metrics, service="svc",
                               traffic_classes=TrafficClasses(["interactive", "batch"], routes={"/bulk": "batch"}))
    tl = recorder.begin()
    assert timing.traffic_class_to_forward() is None
    tl.traffic_class = "batch"  # as read from the request's header
    assert timing.traffic_class_to_forward() == "batch"
    recorder.finish(tl, "/", "GET", "200")
    assert errors(metrics, "route") == 0


# ------------------------------------------------------------------------------------------ threads of one request


def test_a_generator_phase_opened_in_another_thread_of_the_request_waits_while_the_requests_lock_is_held() -> None:
    # the phases sync generators hold open (RequestTimeline.held) are added and removed in the threads stepping them:
    # generators of one request stepped in several threads at once lost a frame made or removed meanwhile (1 of
    # 48 000 left held). Deterministic form: while a thread holds the request's lock, another thread's generator
    # phase must wait for it, and is remembered and forgotten once it is released
    recorder = RequestRecorder(Metrics(CollectorRegistry()), service="svc")
    tl = recorder.begin()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with timing._shared_lock(tl):
            holding.set()
            release.wait(10)

    inside = threading.Event()

    def gen() -> Iterator[int]:
        with aiwatch.phase("step"):
            inside.set()
            yield 1

    def step() -> None:
        for _ in gen():
            pass

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    stepper = threading.Thread(target=contextvars.copy_context().run, args=(step,))
    stepper.start()
    stepper.join(0.5)
    try:
        assert not inside.is_set()
    finally:
        release.set()
        holder.join(10)
        stepper.join(10)
    assert not stepper.is_alive()
    assert tl.held == []
    recorder.finish(tl, "/", "GET", "200")
    assert phase_sum(recorder.metrics.registry, "step") is not None
