"""What the benches count per request (bench/counting.py), and the refusal of a comparison that is not like for
like. Exemplars count: aiwatch attaches the trace id to a traced request's time observations, and the hand-written
sides did not, so a 3 µs difference in gRPC's tracing figure was work only one side did."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from bench.counting import Work, count_work, recording_provider, require_same_work, trace_exemplar


def _histogram_work(exemplar: dict[str, str] | None, observations: int = 1) -> Work:
    registry = CollectorRegistry()
    histogram = Histogram("bench_seconds", "Time.", ("route",), registry=registry)

    def run_once() -> None:
        for i in range(observations):
            histogram.labels(f"/r{i}").observe(0.01, exemplar)

    return count_work(run_once, registry, None)


def test_each_exemplar_set_by_a_request_is_counted() -> None:
    assert _histogram_work(None).exemplars == 0
    assert _histogram_work({"trace_id": "ab" * 16}).exemplars == 1
    assert _histogram_work({"trace_id": "ab" * 16}, observations=3).exemplars == 3
    # the exemplars do not change what else is counted
    assert _histogram_work(None).samples == _histogram_work({"trace_id": "ab" * 16}).samples
    assert "3 exemplars" in _histogram_work({"trace_id": "ab" * 16}, observations=3).describe()


def test_a_hand_written_side_without_the_exemplars_is_refused() -> None:
    work = {"mine": _histogram_work({"trace_id": "ab" * 16}), "by hand": _histogram_work(None)}
    with pytest.raises(SystemExit, match="'by hand' does not record what 'mine' records"):
        require_same_work(work, "mine", "by hand")
    work["by hand"] = _histogram_work({"trace_id": "cd" * 16})
    require_same_work(work, "mine", "by hand")


def test_the_exemplar_is_a_sampled_spans_trace_id_as_aiwatch_sets_it() -> None:
    provider, _ = recording_provider()
    span: Any = provider.get_tracer("test").start_span("x")
    assert trace_exemplar(span) == {"trace_id": format(span.get_span_context().trace_id, "032x")}
    span.end()
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    unsampled = NonRecordingSpan(SpanContext(trace_id=1, span_id=2, is_remote=False, trace_flags=TraceFlags(0)))
    assert trace_exemplar(unsampled) is None
