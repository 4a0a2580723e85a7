"""The HTTP methods reported as they are: the standard ten (RFC 9110's, PATCH, QUERY) by default, or the full override
an operator gives in ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`` (the HTTP conventions' variable); any other method is
``_OTHER`` in the ``method`` label and on the spans, on servers (ASGI, WSGI) and clients alike."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from flask import Flask
from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import aiwatch
import aiwatch.client
from aiwatch.semconv import DEFAULT_KNOWN_HTTP_METHODS, MAX_KNOWN_HTTP_METHODS, known_http_methods
from tests.http.asgi_driver import call
from tests.http.peer import peer

VARIABLE = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"
METHODS = ["GET", "QUERY", "PROPFIND", "POST"]


def count(registry: CollectorRegistry, route: str, method: str, status: str = "200") -> float | None:
    return registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "svc", "route": route, "method": method, "status": status, "traffic_class": "realtime"})


def asgi_app(registry: CollectorRegistry, provider: TracerProvider) -> Any:
    async def things(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    routes = [Route("/things", things, methods=METHODS)]
    return aiwatch.instrument(Starlette(routes=routes), registry=registry, service="svc", tracer_provider=provider)


def server_spans(exporter: InMemorySpanExporter) -> dict[str, dict[str, Any]]:
    """Each SERVER span's ``http.request.method_original`` (or the method) -> its name and attributes."""
    out = {}
    for span in exporter.get_finished_spans():
        if span.kind is SpanKind.SERVER:
            attributes = dict(span.attributes or {})
            original = attributes.get("http.request.method_original", attributes["http.request.method"])
            out[original] = {"name": span.name, **attributes}
    return out


async def test_query_is_known_by_default(registry: CollectorRegistry, provider: TracerProvider,
                                         exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    """QUERY (RFC 10008) is labelled and named as it is, as OpenTelemetry's instrumentations and FastAPI report it;
    PROPFIND, outside the defaults, is ``_OTHER``."""
    monkeypatch.delenv(VARIABLE, raising=False)
    app = asgi_app(registry, provider)
    for method in METHODS:
        assert (await call(app, "/things", method=method)).status == 200
    for method in ("GET", "QUERY", "POST"):
        assert count(registry, "/things", method) == 1
    assert count(registry, "/things", "_OTHER") == 1
    assert b"PROPFIND" not in generate_latest(registry)
    spans = server_spans(exporter)
    assert spans["QUERY"]["name"] == "QUERY /things" and spans["QUERY"]["http.request.method"] == "QUERY"
    assert spans["PROPFIND"]["name"] == "HTTP /things" and spans["PROPFIND"]["http.request.method"] == "_OTHER"


async def test_the_variable_is_a_full_override_for_asgi(registry: CollectorRegistry, provider: TracerProvider,
                                                        exporter: InMemorySpanExporter,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``GET, PROPFIND``: those two as they are, every other method (POST and QUERY too) ``_OTHER``."""
    monkeypatch.setenv(VARIABLE, " GET, PROPFIND ,")
    app = asgi_app(registry, provider)
    for method in METHODS:
        assert (await call(app, "/things", method=method)).status == 200
    assert count(registry, "/things", "GET") == 1
    assert count(registry, "/things", "PROPFIND") == 1
    assert count(registry, "/things", "_OTHER") == 2
    spans = server_spans(exporter)
    assert spans["PROPFIND"]["name"] == "PROPFIND /things"
    assert spans["QUERY"]["http.request.method"] == "_OTHER" and spans["QUERY"]["name"] == "HTTP /things"


def test_the_variable_is_a_full_override_for_wsgi(registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "GET,PROPFIND")
    app = Flask("known_methods")

    @app.route("/things", methods=METHODS)
    def things() -> str:
        return "ok"

    aiwatch.instrument(app, registry=registry, service="svc")
    client = app.test_client()
    for method in METHODS:
        assert client.open("/things", method=method, buffered=True).status_code == 200
    assert count(registry, "/things", "GET") == 1
    assert count(registry, "/things", "PROPFIND") == 1
    assert count(registry, "/things", "_OTHER") == 2


@pytest.mark.parametrize(("setting", "expected"), [(None, "QUERY"), ("GET,POST", "_OTHER")])
def test_client_spans_follow_the_same_list(provider: TracerProvider, exporter: InMemorySpanExporter,
                                           monkeypatch: pytest.MonkeyPatch, setting: str | None,
                                           expected: str) -> None:
    if setting is None:
        monkeypatch.delenv(VARIABLE, raising=False)
    else:
        monkeypatch.setenv(VARIABLE, setting)
    with peer() as base, aiwatch.client.instrument_httpx(httpx.Client(), registry=CollectorRegistry(),
                                                         tracer_provider=provider) as client:
        client.request("QUERY", f"{base}/ok")  # the stdlib peer answers 501: the span is what is checked
    span, = (s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT)
    assert dict(span.attributes or {})["http.request.method"] == expected
    assert span.name == ("QUERY" if expected == "QUERY" else "HTTP")


@pytest.mark.parametrize(("value", "message"), [
    ("GET,PROP FIND", r"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS: 'PROP FIND' is no HTTP method"),
    ("GET,(POST)", r"'\(POST\)' is no HTTP method"),
    (",".join(f"M{i}" for i in range(MAX_KNOWN_HTTP_METHODS + 1)), r"lists 65 methods: at most 64"),
])
def test_a_bad_list_stops_instrumenting_with_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str,
                                                          message: str) -> None:
    monkeypatch.setenv(VARIABLE, value)
    for make in (lambda: aiwatch.instrument(Starlette(), registry=CollectorRegistry()),
                 lambda: aiwatch.instrument(Flask("bad"), registry=CollectorRegistry()),
                 lambda: aiwatch.make_client_recorder(registry=CollectorRegistry())):
        with pytest.raises(ValueError, match=message):
            make()


def test_the_defaults_are_at_least_what_opentelemetrys_instrumentations_know() -> None:
    """Every method opentelemetry-util-http's ``sanitize_method`` keeps (of IANA's registry) is known to aiwatch
    too, so a span of aiwatch's never says ``_OTHER`` where OpenTelemetry's own instrumentation names the method."""
    sanitize_method = pytest.importorskip("opentelemetry.util.http").sanitize_method
    iana = ["ACL", "BASELINE-CONTROL", "BIND", "CHECKIN", "CHECKOUT", "CONNECT", "COPY", "DELETE", "GET", "HEAD",
            "LABEL", "LINK", "LOCK", "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL", "MKREDIRECTREF", "MKWORKSPACE",
            "MOVE", "OPTIONS", "ORDERPATCH", "PATCH", "POST", "PRI", "PROPFIND", "PROPPATCH", "PUT", "QUERY",
            "REBIND", "REPORT", "SEARCH", "TRACE", "UNBIND", "UNCHECKOUT", "UNLINK", "UNLOCK", "UPDATE",
            "UPDATEREDIRECTREF", "VERSION-CONTROL"]
    assert {m for m in iana if sanitize_method(m) == m} <= DEFAULT_KNOWN_HTTP_METHODS
    assert "QUERY" in DEFAULT_KNOWN_HTTP_METHODS and len(DEFAULT_KNOWN_HTTP_METHODS) == 10


@given(st.text(max_size=200))
@example(" , ,")
@example("get,GET")
@example("GET,\u00c9T\u00c9")
def test_any_value_gives_a_bounded_set_of_tokens_or_a_clear_error(value: str) -> None:
    """Whatever the variable holds: the methods it lists (case kept, spaces around each dropped), at most 64, each an
    HTTP token; the defaults when it lists none; or a ValueError naming the variable, never anything else."""
    try:
        known = known_http_methods({VARIABLE: value})
    except ValueError as exc:
        assert str(exc).startswith(VARIABLE)
        return
    listed = {m.strip() for m in value.split(",") if m.strip()}
    assert known == (listed or DEFAULT_KNOWN_HTTP_METHODS)
    assert len(known) <= MAX_KNOWN_HTTP_METHODS
    assert all(m and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in m) for m in known)


@pytest.mark.parametrize("opt_in", ["", "http"])
async def test_a_borrowed_span_is_named_after_its_owners_method(registry: CollectorRegistry, provider: TracerProvider,
                                                                exporter: InMemorySpanExporter,
                                                                monkeypatch: pytest.MonkeyPatch, opt_in: str) -> None:
    """OpenTelemetry's ASGI middleware in front knows its own ten methods (it reads no override): when aiwatch names
    its span ``{method} {route}``, the name follows the method that span carries, not aiwatch's list, so name and
    attribute agree. The ``method`` label follows aiwatch's list."""
    from opentelemetry.instrumentation import _semconv
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    monkeypatch.setenv(VARIABLE, "GET,PROPFIND")
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    monkeypatch.setattr(_semconv._OpenTelemetrySemanticConventionStability, "_initialized", False)
    app = OpenTelemetryMiddleware(asgi_app(registry, provider), tracer_provider=provider,
                                  exclude_spans=["send", "receive"])
    for method in ("PROPFIND", "GET"):
        assert (await call(app, "/things", method=method)).status == 200
    named = sorted((dict(span.attributes or {}).get("http.request.method") or dict(span.attributes or {})[
        "http.method"], span.name) for span in exporter.get_finished_spans())
    assert named == [("GET", "GET /things"), ("_OTHER", "HTTP /things")]  # PROPFIND is _OTHER to OpenTelemetry
    assert count(registry, "/things", "PROPFIND") == 1
