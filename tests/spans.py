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
