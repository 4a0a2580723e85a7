"""What an instrumented request does, counted rather than assumed: spans and metric updates per request.

The benches print these next to their timings, so a ratio is read against what each side records:

* spans per request, from an OpenTelemetry ``InMemorySpanExporter`` behind the variant's tracer provider;
* metric families, series and exposition samples changed by one request, from the variant's registry scraped before
  and after it (``_created`` samples left out; a histogram observation changes its ``_count``, its ``_sum`` and every
  cumulative bucket at or above the value, which is what a scrape reads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry


class DropExporter(SpanExporter):
    """Accepts spans and throws them away: the timed runs measure span work, not export I/O."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def discarding_provider() -> TracerProvider:
    """An SDK provider whose SimpleSpanProcessor hands each ended span to an exporter that drops it."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(DropExporter()))
    return provider


def recording_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """The same provider shape, keeping the spans so that they can be counted."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@dataclass(frozen=True)
class Work:
    """What one request (or call) recorded."""

    spans: float
    families: int
    series: int
    samples: int
    family_names: tuple[str, ...]
    #: span attributes set per request, over all its spans (what each span carries costs too)
    span_attributes: float = 0.0
    #: exemplars set per request: histogram buckets whose exemplar (a trace id, a value, a timestamp) changed
    exemplars: int = 0

    def describe(self) -> str:
        spans = f"{self.spans:g} spans ({self.span_attributes:g} attributes)" if self.spans else "0 spans"
        return (f"{spans}, {self.families} families, {self.series} series, {self.samples} samples, "
                f"{self.exemplars} exemplars")


def _samples(registry: CollectorRegistry | None) -> dict[tuple[str, str, tuple[tuple[str, str], ...]],
                                                          tuple[float, Any]]:
    """Each sample's value and exemplar."""
    out: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[float, Any]] = {}
    if registry is None:
        return out
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(family.name, s.name, tuple(sorted(s.labels.items())))] = (s.value, s.exemplar)
    return out


def trace_exemplar(span: Any) -> dict[str, str] | None:
    """The exemplar aiwatch attaches to a traced request's observations: the span's trace id, when it is sampled."""
    context = span.get_span_context()
    return {"trace_id": format(context.trace_id, "032x")} if context.trace_flags.sampled else None


def count_variants(variants: Mapping[str, Callable[[CollectorRegistry, Any], Any]], names: Iterable[str],
                   run_once: Callable[[Any], object]) -> dict[str, Work]:
    """What one request of each named variant records: each variant's app (``variants[name](registry,
    provider)``) made on a fresh registry and a span-keeping provider, ``run_once(app)`` sending it one request."""
    out = {}
    for name in names:
        registry = CollectorRegistry()
        provider, exporter = recording_provider()
        app = variants[name](registry, provider)
        out[name] = count_work(lambda app=app: run_once(app), registry, exporter)
    return out


def count_work(run_once: Callable[[], object], registry: CollectorRegistry | None,
               exporter: InMemorySpanExporter | None, spans_over: int = 20, tries: int = 5) -> Work:
    """Spans per request over ``spans_over`` requests, and what one request changed in ``registry`` (after one
    warm-up request, so that label children already exist, as in a running service): the least of ``tries``
    counts. Work done on a timer rather than per request (aiwatch's event-loop sampler, every 0.1 s) lands in a
    request's count when that request runs past the timer, as on a loaded machine (8 families counted for aiwatch's
    4): it only ever adds, so the least count is the request's own."""
    run_once()
    changed, exemplars = min((_changed_by(run_once, registry) for _ in range(tries)),
                             key=lambda counted: (len({key[0] for key in counted[0]}), len(counted[0])))
    families = sorted({family for family, _, _ in changed})
    series = {(family, tuple(kv for kv in labels if kv[0] not in ("le", "quantile"))) for family, _, labels in changed}
    spans = attributes = 0.0
    if exporter is not None:
        exporter.clear()
        for _ in range(spans_over):
            run_once()
        finished = exporter.get_finished_spans()
        spans = len(finished) / spans_over
        attributes = sum(len(span.attributes or {}) for span in finished) / spans_over
    return Work(spans, len(families), len(series), len(changed), tuple(families), attributes, exemplars)


def _changed_by(run_once: Callable[[], object], registry: CollectorRegistry | None
                ) -> tuple[list[tuple[str, str, tuple[tuple[str, str], ...]]], int]:
    """The samples one ``run_once()`` changed in ``registry``, and the exemplars it set."""
    before = _samples(registry)
    run_once()
    after = _samples(registry)
    changed = [key for key, (value, _) in after.items() if key not in before or before[key][0] != value]
    exemplars = sum(1 for key, (_, exemplar) in after.items()
                    if exemplar is not None and (key not in before or before[key][1] != exemplar))
    return changed, exemplars


def require_same_work(work: Mapping[str, Work], mine: str, by_hand: str) -> None:
    """Refuse a comparison that is not like for like: ``by_hand`` (a hand-written equivalent of ``mine``) must change
    as many metric families and series per request, make as many spans with as many attributes, and set as many
    exemplars. Not the samples: how many buckets an observation changes depends on the value observed (a slower
    request changes fewer), so the two sides' counts may differ by a bucket or two from one request to the next."""
    def shape(w: Work) -> tuple[float, float, int, int, int]:
        return w.spans, w.span_attributes, w.families, w.series, w.exemplars

    if shape(work[mine]) != shape(work[by_hand]):
        raise SystemExit(f"{by_hand!r} does not record what {mine!r} records: {work[by_hand].describe()} against "
                         f"{work[mine].describe()}")


@dataclass(frozen=True)
class HandFamilies:
    """aiwatch's HTTP families written by hand with prometheus_client's documented API (same labels and buckets):
    what the benches' ``same-families`` variants record, to tell aiwatch's own cost from recording that much."""

    duration: Any
    phase: Any
    request_size: Any
    response_size: Any
    in_flight: Any

    @classmethod
    def on(cls, registry: CollectorRegistry) -> HandFamilies:
        from prometheus_client import Gauge, Histogram

        from aiwatch.metrics import BYTES_BUCKETS, LATENCY_BUCKETS

        def sizes(name: str, what: str) -> Histogram:
            return Histogram(name, what, ("service", "route", "method"), buckets=BYTES_BUCKETS, registry=registry)

        return cls(
            Histogram("hand_request_duration_seconds", "Request time.",
                      ("service", "route", "method", "status", "traffic_class"), buckets=LATENCY_BUCKETS,
                      registry=registry),
            Histogram("hand_phase_duration_seconds", "Phase time.", ("service", "model", "model_version", "phase"),
                      buckets=LATENCY_BUCKETS, registry=registry),
            sizes("hand_request_size_bytes", "Request body size."),
            sizes("hand_response_size_bytes", "Response body size."),
            Gauge("hand_requests_in_flight", "Requests in flight.", ("service",), registry=registry))

    def record(self, seconds: float, route: str, method: str, status: str, received: int, sent: int,
               exemplar: dict[str, str] | None = None) -> None:
        """One request, as aiwatch records one with no phase (its ``overhead`` phase is the whole request);
        ``exemplar``: a traced request's (:func:`trace_exemplar`), on the time observations as aiwatch puts it."""
        self.duration.labels("bench", route, method, status, "realtime").observe(seconds, exemplar)
        self.phase.labels("bench", "", "", "overhead").observe(seconds, exemplar)
        self.request_size.labels("bench", route, method).observe(received)
        self.response_size.labels("bench", route, method).observe(sent)
