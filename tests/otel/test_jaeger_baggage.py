"""Jaeger's baggage headers (``uberctx-KEY: value``) reach OpenTelemetry's Jaeger propagator when it is the global
one (``OTEL_PROPAGATORS=jaeger``, or one of a composite's): behind uvicorn, werkzeug and grpcio the app runs with the
caller's Jaeger baggage, the baggage the propagator reads when called directly on the request's headers. Its
``fields`` name only ``uber-trace-id`` (a prefix cannot be named), so before, only that header was handed to it and
the baggage was lost. At most the first :data:`~aiwatch.tracing.MAX_PREFIXED` (180) ``uberctx-`` headers are handed
to it, however many came. OT Trace's ``ot-baggage-KEY`` headers are read the same way."""

from __future__ import annotations

from typing import Any

import pytest
import wrapt
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.propagators.ot_trace import OTTracePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aiwatch.grpc._common import metadata_dict
from aiwatch.metrics import Metrics
from aiwatch.middleware.asgi import AiwatchMiddleware
from aiwatch.tracing import MAX_PREFIXED, carrier_fields
from tests.propagation import SERVERS, Seen, ids, recording, server_spans
from tests.servers import wait_until
from tests.spans import global_textmap

TRACE, SPAN = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
UBER = ("uber-trace-id", f"{TRACE}:{SPAN}:0:1")
JAEGER_BAGGAGE_PREFIX = "uberctx-"
OT_TRACE = [("ot-tracer-traceid", TRACE), ("ot-tracer-spanid", SPAN), ("ot-tracer-sampled", "true")]


RecordingJaeger = recording(JaegerPropagator)


def _request(server: Any, propagator: TextMapPropagator, headers: list[tuple[str, str]], metrics: Metrics,
             provider: TracerProvider, exporter: InMemorySpanExporter,
             monkeypatch: pytest.MonkeyPatch) -> tuple[Seen, Any]:
    """Send ``headers`` to ``server`` with aiwatch and ``propagator`` global: what the app saw, and the SERVER
    span's parent."""
    seen: list[Seen] = []
    with global_textmap(propagator), server(True, metrics, provider, seen, monkeypatch) as send:
        assert send(headers)[0] in (0, 200)
        wait_until(lambda: len(server_spans(exporter)) == 1, what="the request's SERVER span ended")
    [span] = server_spans(exporter)
    [one] = seen
    return one, ids(span.parent)


def _direct(carrier: dict[str, list[str]],
            propagator: TextMapPropagator | None = None) -> tuple[dict[str, object], Any]:
    """The baggage and the parent OpenTelemetry's Jaeger propagator (or ``propagator``) reads from the app's headers,
    called directly."""
    ctx = (propagator or JaegerPropagator()).extract(carrier)
    return dict(baggage.get_all(ctx)), ids(trace.get_current_span(ctx).get_span_context())


@pytest.mark.slow
@SERVERS
@pytest.mark.parametrize("propagator", [
    JaegerPropagator(),
    CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), JaegerPropagator()]),
], ids=["jaeger", "tracecontext,baggage,jaeger"])
def test_jaeger_baggage_reaches_the_app(metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter,
                                        server: Any, propagator: TextMapPropagator,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    headers = [UBER, ("uberctx-user", "alice"), ("uberctx-tenant", "acme%20corp")]
    seen, parent = _request(server, propagator, headers, metrics, provider, exporter, monkeypatch)
    assert (seen.baggage, parent) == ({"user": "alice", "tenant": "acme corp"}, (TRACE, SPAN))
    assert (seen.baggage, parent) == _direct(seen.carrier)


@pytest.mark.slow
@SERVERS
@pytest.mark.parametrize("propagator", [
    OTTracePropagator(),
    CompositePropagator([TraceContextTextMapPropagator(), JaegerPropagator(), OTTracePropagator()]),
], ids=["ottrace", "tracecontext,jaeger,ottrace"])
def test_ot_trace_baggage_reaches_the_app(metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter,
                                          server: Any, propagator: TextMapPropagator,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    headers = [*OT_TRACE, ("ot-baggage-user", "alice")]
    seen, parent = _request(server, propagator, headers, metrics, provider, exporter, monkeypatch)
    assert (seen.baggage, parent) == ({"user": "alice"}, (TRACE, SPAN))
    assert (seen.baggage, parent) == _direct(seen.carrier, OTTracePropagator())


@pytest.mark.slow
@SERVERS
def test_at_most_the_first_180_uberctx_headers_are_handed_to_the_propagator(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter, server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # zero-padded: werkzeug's app lists its environ sorted, which is then the order sent
    sent = [(f"uberctx-k{i:03d}", f"v{i}") for i in range(300)]
    propagator = RecordingJaeger()
    seen, parent = _request(server, propagator, [UBER, *sent], metrics, provider, exporter, monkeypatch)
    [handed] = propagator.carriers
    prefixed = [name for name in handed if name.startswith(JAEGER_BAGGAGE_PREFIX)]
    assert prefixed == [name for name, _ in sent[:MAX_PREFIXED]]
    assert set(handed) == {UBER[0], *prefixed}
    # the app's baggage: the first 180 (opentelemetry-propagator-jaeger 1.45 on reads the first 180 itself; older
    # ones read them all)
    assert (seen.baggage, parent) == ({f"k{i:03d}": f"v{i}" for i in range(MAX_PREFIXED)}, (TRACE, SPAN))


@pytest.mark.slow
@SERVERS
def test_a_repeated_uberctx_header_counts_once_towards_the_cap(
        metrics: Metrics, provider: TracerProvider, exporter: InMemorySpanExporter, server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A header sent MAX_PREFIXED times takes one place of the 180, as OpenTelemetry's own instrumentations read
    headers (a dict): the next key is still handed over (ASGI counted each repeat before; WSGI servers join repeats
    into one environ entry, and gRPC counted once already)."""
    propagator = RecordingJaeger()
    sent = [UBER, *[("uberctx-a", "1")] * MAX_PREFIXED, ("uberctx-b", "2")]
    seen, parent = _request(server, propagator, sent, metrics, provider, exporter, monkeypatch)
    [handed] = propagator.carriers
    assert {name for name in handed if name.startswith(JAEGER_BAGGAGE_PREFIX)} == {"uberctx-a", "uberctx-b"}
    assert (seen.baggage.get("b"), parent) == ("2", (TRACE, SPAN))


def test_the_prefixes_are_read_only_where_a_jaeger_or_ot_trace_propagator_is_global() -> None:
    assert carrier_fields().prefix is None  # W3C's default
    for without in (B3MultiFormat(), CompositePropagator([TraceContextTextMapPropagator(), B3MultiFormat()])):
        with global_textmap(without):
            assert carrier_fields().prefix is None
    nested = CompositePropagator([TraceContextTextMapPropagator(), CompositePropagator([JaegerPropagator()])])
    for holding in (JaegerPropagator(), RecordingJaeger(), nested):
        with global_textmap(holding):
            fields = carrier_fields()
            assert fields.prefix == (JAEGER_BAGGAGE_PREFIX,)
            assert "uber-trace-id" in fields.names
    with global_textmap(OTTracePropagator()):
        assert carrier_fields().prefix == ("ot-baggage-",)
    with global_textmap(wrapt.ObjectProxy(JaegerPropagator())):  # a proxy (instrumented, wrapped) reads as its target
        assert carrier_fields().prefix == (JAEGER_BAGGAGE_PREFIX,)
    with global_textmap(CompositePropagator([JaegerPropagator(), TraceContextTextMapPropagator(),
                                             OTTracePropagator(), JaegerPropagator()])):
        assert carrier_fields().prefix == (JAEGER_BAGGAGE_PREFIX, "ot-baggage-")


def test_a_header_of_the_wrong_type_is_left_out_alone() -> None:
    """An ASGI header whose value is no bytes (no server sends one) is left out; the rest of the carrier is read
    (before, the whole parent was lost)."""
    with global_textmap(JaegerPropagator()):
        fields = carrier_fields()
        ctx = AiwatchMiddleware._parent_context(
            [(b"uber-trace-id", bytearray(UBER[1].encode())), (b"uberctx-user", "alice"), (b"uberctx-team", b"ml")],
            fields)
    assert ids(trace.get_current_span(ctx).get_span_context()) == (TRACE, SPAN)  # a bytearray reads as bytes do
    assert dict(baggage.get_all(ctx)) == {"team": "ml"}


def test_a_repeated_grpc_baggage_key_counts_once_towards_the_cap() -> None:
    """OpenTelemetry's gRPC instrumentation reads the metadata as a dict: a key repeated counts once."""
    metadata = [UBER, *[("uberctx-a", "1")] * MAX_PREFIXED, ("uberctx-b", "2")]
    assert metadata_dict(metadata, ("uber-trace-id",), (JAEGER_BAGGAGE_PREFIX,)) == {
        "uber-trace-id": UBER[1], "uberctx-a": "1", "uberctx-b": "2"}
