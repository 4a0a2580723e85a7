"""A request that repeats its W3C trace-context headers is read as OpenTelemetry's propagators read it: the first
``traceparent`` is the parent, the ``tracestate`` headers are one list in order, and the first ``baggage`` header is
the baggage (OpenTelemetry's W3C baggage propagator reads only the first). Behind real servers: uvicorn hands an ASGI
app each header line, werkzeug joins them with commas in the WSGI environ (so behind it the baggage headers arrive as
one, and all their entries are read). Before, the ASGI middleware took the last of each, and the WSGI middleware read
the joined traceparents as none (a new trace)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from opentelemetry import baggage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import aiwatch
from tests.http.test_http_wsgi_server import serving
from tests.servers import get_with_repeated_headers, uvicorn_in_thread, wait_until

FIRST_TRACE, FIRST_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SECOND_TRACE, SECOND_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
HEADERS = [
    ("traceparent", f"00-{FIRST_TRACE}-{FIRST_SPAN}-01"),
    ("tracestate", "congo=t61rcWkgMzE"),
    ("baggage", "user=alice"),
    ("traceparent", f"00-{SECOND_TRACE}-{SECOND_SPAN}-01"),
    ("tracestate", "rojo=00f067aa0ba902b7"),
    ("baggage", "tenant=acme"),
]


@contextmanager
def asgi_server(registry: CollectorRegistry, provider: TracerProvider, seen: list[Any]) -> Iterator[int]:
    app = FastAPI()

    @app.get("/items")
    async def items() -> dict[str, str]:
        seen.append(dict(baggage.get_all()))
        return {"ok": "yes"}

    with uvicorn_in_thread(aiwatch.instrument(app, registry=registry, service="svc",
                                              tracer_provider=provider)) as (port, _):
        yield port


@contextmanager
def wsgi_server(registry: CollectorRegistry, provider: TracerProvider, seen: list[Any]) -> Iterator[int]:
    app = Flask(__name__)

    @app.get("/items")
    def items() -> dict[str, str]:
        seen.append(dict(baggage.get_all()))
        return {"ok": "yes"}

    with serving(aiwatch.instrument(app, registry=registry, service="svc", tracer_provider=provider)) as conn:
        yield conn.port


def server_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER
            and s.instrumentation_scope is not None and s.instrumentation_scope.name == "aiwatch"]


@pytest.mark.parametrize("server", [asgi_server, wsgi_server], ids=["asgi-uvicorn", "wsgi-werkzeug"])
def test_the_first_traceparent_wins_and_the_tracestates_add_up(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter, server: Any) -> None:
    seen: list[Any] = []
    with server(registry, provider, seen) as port:
        assert get_with_repeated_headers(port, HEADERS) == 200
        wait_until(lambda: len(server_spans(exporter)) == 1, what="the request's SERVER span ended")
    span = server_spans(exporter)[0]
    assert span.parent is not None
    assert (f"{span.parent.trace_id:032x}", f"{span.parent.span_id:016x}") == (FIRST_TRACE, FIRST_SPAN)
    assert f"{span.context.trace_id:032x}" == FIRST_TRACE
    assert list(span.parent.trace_state.items()) == [("congo", "t61rcWkgMzE"), ("rojo", "00f067aa0ba902b7")]
    # the WSGI server joined the two baggage headers into one environ value before the app saw them
    assert seen == [{"user": "alice", "tenant": "acme"} if server is wsgi_server else {"user": "alice"}]


#: two baggage headers of ~5000 bytes (98 entries of 50 bytes): each within OpenTelemetry's 8192-byte limit, joined
#: past it
BIG_FIRST = ",".join(f"a{i:03d}={'x' * 45}" for i in range(98))
BIG_SECOND = ",".join(f"b{i:03d}={'y' * 45}" for i in range(98))


def test_two_big_baggage_headers_keep_the_first_ones_entries(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """OpenTelemetry's propagator drops all baggage of a header past 8192 bytes: before, the ASGI middleware joined
    the two headers into one of ~10 KB and the app got no baggage at all, where OpenTelemetry keeps the first's."""
    assert 4900 < len(BIG_FIRST) <= 5000 and 4900 < len(BIG_SECOND) <= 5000
    seen: list[Any] = []
    with asgi_server(registry, provider, seen) as port:
        assert get_with_repeated_headers(port, [("traceparent", f"00-{FIRST_TRACE}-{FIRST_SPAN}-01"),
                                                ("baggage", BIG_FIRST), ("baggage", BIG_SECOND)]) == 200
        wait_until(lambda: len(server_spans(exporter)) == 1, what="the request's SERVER span ended")
    expected = dict(entry.split("=", 1) for entry in BIG_FIRST.split(","))
    assert len(expected) == 98
    assert seen == [expected]
