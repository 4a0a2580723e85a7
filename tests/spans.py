"""OpenTelemetry's SDK recording spans in memory, for the tests that check the spans aiwatch makes.

The ``provider`` and ``exporter`` fixtures (tests/conftest.py) give a test one pair; a test that needs a fresh pair
per example (hypothesis) calls :func:`recording_provider` itself. opentelemetry-sdk is the otel extra: the core's
own run (scripts/test-lowest.sh) has none, so only the tests that check spans import this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.propagate import get_global_textmap, set_global_textmap
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families


def recording_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    """A TracerProvider that hands each span to ``exporter`` as it ends."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@contextmanager
def global_textmap(propagator: TextMapPropagator) -> Iterator[None]:
    """``propagator`` as OpenTelemetry's global propagator (what ``OTEL_PROPAGATORS`` chooses) meanwhile; the one
    before it restored after."""
    before = get_global_textmap()
    set_global_textmap(propagator)
    try:
        yield
    finally:
        set_global_textmap(before)


def exemplar_trace_ids(registry: CollectorRegistry) -> dict[str, set[str]]:
    """The ``trace_id`` of every exemplar in ``registry``'s OpenMetrics exposition (what Prometheus scrapes), per
    histogram."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.exemplar is not None:
                found.setdefault(family.name, set()).add(sample.exemplar.labels["trace_id"])
    return found
