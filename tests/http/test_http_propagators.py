"""aiwatch continues the caller's trace through OpenTelemetry's global propagator (``OTEL_PROPAGATORS``), handing it
the request headers it reads (its ``fields``), not only the W3C ones: behind real servers (uvicorn, werkzeug), a B3
caller's trace is continued with ``OTEL_PROPAGATORS=b3multi``, ``b3`` or ``b3multi,tracecontext``. Before, only
``traceparent``, ``tracestate`` and ``baggage`` reached the propagator, and every B3 request started a new trace."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.tracing import W3C_FIELDS, carrier_fields
from tests.http.test_http_wsgi_server import serving
from tests.servers import get_with_repeated_headers, uvicorn_in_thread, wait_until
from tests.spans import global_textmap

TRACE, SPAN = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
OTHER_TRACE, OTHER_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
B3_MULTI = [("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Sampled", "1")]
B3_SINGLE = [("b3", f"{TRACE}-{SPAN}-1")]
W3C = [("traceparent", f"00-{OTHER_TRACE}-{OTHER_SPAN}-01")]
#: a B3 debug request: X-B3-Flags: 1 and no X-B3-Sampled (B3's spec), which b3multi reads though its fields omit it
B3_DEBUG = [("X-B3-TraceId", TRACE), ("X-B3-SpanId", SPAN), ("X-B3-Flags", "1")]


@contextmanager
def asgi_server(registry: CollectorRegistry, provider: TracerProvider) -> Iterator[int]:
    app = FastAPI()

    @app.get("/items")
    async def items() -> dict[str, str]:
        return {"ok": "yes"}

    with uvicorn_in_thread(aiwatch.instrument(app, registry=registry, service="svc",
                                              tracer_provider=provider)) as (port, _):
        yield port


@contextmanager
def wsgi_server(registry: CollectorRegistry, provider: TracerProvider) -> Iterator[int]:
    app = Flask(__name__)

    @app.get("/items")
    def items() -> dict[str, str]:
        return {"ok": "yes"}

    with serving(aiwatch.instrument(app, registry=registry, service="svc", tracer_provider=provider)) as conn:
        yield conn.port


def parents(port: int, exporter: InMemorySpanExporter, *requests: Sequence[tuple[str, str]]) -> list[Any]:
    """Each request's (sent one after the other) aiwatch SERVER span's parent: (trace id, span id) in hex, or
    ``None`` for a span that started a new trace."""
    out = []
    for headers in requests:
        exporter.clear()
        assert get_with_repeated_headers(port, headers) == 200
        wait_until(lambda: len(server_spans(exporter)) == 1, what="the request's SERVER span ended")
        parent = server_spans(exporter)[0].parent
        out.append(None if parent is None else (f"{parent.trace_id:032x}", f"{parent.span_id:016x}"))
    return out


def server_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER
            and s.instrumentation_scope is not None and s.instrumentation_scope.name == "aiwatch"]


SERVERS = pytest.mark.parametrize("server", [asgi_server, wsgi_server], ids=["asgi-uvicorn", "wsgi-werkzeug"])


@pytest.mark.slow
@SERVERS
@pytest.mark.parametrize(("propagator", "headers"), [
    (B3MultiFormat(), B3_MULTI),
    (B3SingleFormat(), B3_SINGLE),
    # a propagator's fields are the headers it injects, not all it reads: without X-B3-Flags a debug request's
    # context was unsampled and the server span not recorded; b3 reads the multi-header form too (Envoy's)
    (B3MultiFormat(), B3_DEBUG),
    (B3SingleFormat(), B3_MULTI),
    (B3MultiFormat(), B3_SINGLE),
], ids=["b3multi", "b3", "b3multi-debug", "b3-reads-multi", "b3multi-reads-single"])
def test_a_b3_callers_trace_is_continued(registry: CollectorRegistry, provider: TracerProvider,
                                         exporter: InMemorySpanExporter, server: Any,
                                         propagator: TextMapPropagator, headers: list[tuple[str, str]]) -> None:
    with global_textmap(propagator), server(registry, provider) as port:
        assert parents(port, exporter, headers) == [(TRACE, SPAN)]


@pytest.mark.slow
@SERVERS
def test_b3_and_w3c_callers_are_continued_with_both_propagators(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter, server: Any) -> None:
    """``OTEL_PROPAGATORS=b3multi,tracecontext,baggage``: a CompositePropagator, whose fields are its propagators'."""
    composite = CompositePropagator([B3MultiFormat(), TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    with global_textmap(composite), server(registry, provider) as port:
        assert parents(port, exporter, B3_MULTI, W3C, []) == [(TRACE, SPAN), (OTHER_TRACE, OTHER_SPAN), None]


@pytest.mark.slow
def test_a_repeated_b3_header_is_read_as_its_first(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """As a repeated ``traceparent``: uvicorn hands the app each header line, and the first is the one read."""
    repeated = [*B3_MULTI, ("X-B3-TraceId", OTHER_TRACE), ("X-B3-SpanId", OTHER_SPAN)]
    with global_textmap(B3MultiFormat()), asgi_server(registry, provider) as port:
        assert parents(port, exporter, repeated) == [(TRACE, SPAN)]


class _MixedCase(TextMapPropagator):
    """A propagator that spells its field in mixed case and looks it up so (as AWS X-Ray's does
    ``X-Amzn-Trace-Id``): ``trace-id:span-id`` in hex."""

    KEY = "X-Custom-Trace"

    def extract(self, carrier: CarrierT, context: Context | None = None,
                getter: Getter[CarrierT] = default_getter) -> Context:
        found = getter.get(carrier, self.KEY)
        if not found:
            return context if context is not None else Context()
        trace_id, span_id = found[0].split(":")
        caller = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(1))
        return trace.set_span_in_context(NonRecordingSpan(caller), context)

    def inject(self, carrier: CarrierT, context: Context | None = None,
               setter: Setter[CarrierT] = default_setter) -> None:
        return None

    @property
    def fields(self) -> set[str]:
        return {self.KEY}


@pytest.mark.slow
@SERVERS
def test_a_field_spelled_in_mixed_case_reaches_the_propagator_as_it_spells_it(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter, server: Any) -> None:
    with global_textmap(_MixedCase()), server(registry, provider) as port:
        assert parents(port, exporter, [("x-custom-trace", f"{TRACE}:{SPAN}")]) == [(TRACE, SPAN)]


class _Unreadable(TraceContextTextMapPropagator):
    reads = 0

    @property
    def fields(self) -> set[str]:
        self.reads += 1
        raise RuntimeError("no fields")


class _Odd(TextMapPropagator):
    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Context:
        return Context()

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        return None

    @property
    def fields(self) -> Any:
        return {"X-Odd", b"x-bytes", 7, "", "\u0394-not-latin-1", "x-odd", "tracestate"}


def test_the_propagators_fields_are_read_once_per_propagator() -> None:
    """Read once per propagator object (the request path pays an identity check); the default is W3C's three, a
    propagator whose ``fields`` raises is given them too, and names no header could carry are left out."""
    default = carrier_fields()
    assert default.names == W3C_FIELDS
    assert default.raw == (b"traceparent", b"tracestate", b"baggage")
    assert default.environ == (("traceparent", "HTTP_TRACEPARENT"), ("tracestate", "HTTP_TRACESTATE"),
                               ("baggage", "HTTP_BAGGAGE"))
    assert carrier_fields() is default
    unreadable = _Unreadable()
    with global_textmap(unreadable):
        assert carrier_fields().names == W3C_FIELDS
        assert carrier_fields() is carrier_fields()
    assert unreadable.reads == 1
    with global_textmap(_Odd()):
        odd = carrier_fields()
    assert odd.names == ("tracestate", "x-odd")
    assert odd.environ == (("tracestate", "HTTP_TRACESTATE"), ("x-odd", "HTTP_X_ODD"))
    assert odd.declared == {"x-odd": "X-Odd"}  # of two spellings, the first in sorted order is the one looked up


class _OneName(_Odd):
    @property
    def fields(self) -> Any:
        return "X-One"  # a str, not a set of names: read as one name, not as its letters


def test_b3s_fields_stand_for_every_header_b3_reads_and_a_str_is_one_name() -> None:
    for propagator in (B3MultiFormat(), B3SingleFormat()):
        with global_textmap(propagator):
            assert set(carrier_fields().names) == {"b3", "x-b3-flags", "x-b3-parentspanid", "x-b3-sampled",
                                                   "x-b3-spanid", "x-b3-traceid"}
    with global_textmap(_OneName()):
        assert carrier_fields().names == ("x-one",)
