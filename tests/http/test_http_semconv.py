"""HTTP spans follow OpenTelemetry's stable HTTP conventions, alone and with OpenTelemetry's own instrumentation in
front: every attribute checked with the SDK's in-memory exporter, for ASGI (FastAPI, Starlette), WSGI (Flask),
httpx and requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from flask import Flask
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OpenTelemetryWSGIMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import aiwatch
import aiwatch.client
from aiwatch import semconv
from aiwatch.middleware.asgi import AiwatchMiddleware
from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware
from tests.http.asgi_driver import call
from tests.http.peer import peer
from tests.labels import with_defaults

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with peer() as url:
        yield url


class Boom(Exception):
    pass


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/items/{item_id}", methods=["GET", "POST"])
    async def item(item_id: int) -> dict[str, int]:
        with aiwatch.phase("inference"):
            pass
        return {"id": item_id}

    @app.get("/missing/{name}")
    async def missing(name: str) -> JSONResponse:
        return JSONResponse({"missing": name}, status_code=404)

    @app.get("/broken")
    async def broken() -> JSONResponse:
        return JSONResponse({}, status_code=503)

    @app.get("/boom")
    async def boom() -> None:
        raise Boom("no")

    return app


def spans_of(exporter: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is kind]


def only(exporter: InMemorySpanExporter, kind: SpanKind) -> ReadableSpan:
    found = spans_of(exporter, kind)
    assert len(found) == 1, [(s.name, s.instrumentation_scope.name if s.instrumentation_scope else None)
                             for s in exporter.get_finished_spans()]
    return found[0]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# --- servers ---------------------------------------------------------------------------------------------------
async def test_asgi_server_span_has_every_stable_http_attribute(registry: CollectorRegistry, provider: TracerProvider,
                                                                exporter: InMemorySpanExporter) -> None:
    app = aiwatch.instrument(fastapi_app(), registry=registry, tracer_provider=provider)
    resp = await call(app, "/items/7", headers=[("host", "api.example:8443"), ("traceparent", TRACEPARENT),
                                                 ("user-agent", "curl/8.5.0"), ("user-agent", "second/1")],
                      query="q=1&x=2")
    assert resp.status == 200
    server = only(exporter, SpanKind.SERVER)
    assert server.name == "GET /items/{item_id}"
    assert server.instrumentation_scope is not None and server.instrumentation_scope.name == "aiwatch"
    assert attributes(server) == {
        "http.request.method": "GET", "http.route": "/items/{item_id}", "http.response.status_code": 200,
        "url.scheme": "http", "url.path": "/items/7", "url.query": "q=1&x=2",
        "server.address": "api.example", "server.port": 8443, "network.protocol.version": "1.1",
        "client.address": "127.0.0.1", "user_agent.original": "curl/8.5.0"}
    assert server.status.status_code is StatusCode.UNSET
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    phase = next(s for s in exporter.get_finished_spans() if s.name == "inference")
    assert phase.parent is not None and phase.parent.span_id == server.context.span_id


@pytest.mark.parametrize(("path", "status", "error_type", "span_status"), [
    ("/missing/x", 404, None, StatusCode.UNSET),  # a 4xx is the client's error, not the server's
    ("/broken", 503, "503", StatusCode.ERROR),
])
async def test_asgi_server_status(registry: CollectorRegistry, provider: TracerProvider,
                                  exporter: InMemorySpanExporter, path: str, status: int, error_type: str | None,
                                  span_status: StatusCode) -> None:
    app = aiwatch.instrument(fastapi_app(), registry=registry, tracer_provider=provider)
    assert (await call(app, path)).status == status
    server = only(exporter, SpanKind.SERVER)
    assert attributes(server)["http.response.status_code"] == status
    assert attributes(server).get("error.type") == error_type
    assert server.status.status_code is span_status


async def test_asgi_server_exception_is_its_error_type(registry: CollectorRegistry, provider: TracerProvider,
                                                       exporter: InMemorySpanExporter) -> None:
    app = aiwatch.instrument(fastapi_app(), registry=registry, tracer_provider=provider)
    with pytest.raises(Boom):
        await call(app, "/boom")
    server = only(exporter, SpanKind.SERVER)
    assert server.name == "GET /boom"
    assert attributes(server)["error.type"] == "Boom"
    assert "http.response.status_code" not in attributes(server)  # no response was started
    assert server.status.status_code is StatusCode.ERROR
    assert [e.name for e in server.events] == ["exception"]


async def _sends_a_500_then_raises(scope: Any, receive: Any, send: Any) -> None:
    """What Starlette's ServerErrorMiddleware does with an exception: answer 500, then re-raise it to the server."""
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b"Internal Server Error"})
    raise Boom("no")


@pytest.mark.parametrize("inner", [fastapi_app, lambda: _sends_a_500_then_raises], ids=["fastapi", "raw-asgi"])
async def test_an_exception_raised_after_the_500_was_sent_is_on_the_server_span(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter, inner: Any) -> None:
    # aiwatch's middleware outside the app's error middleware (AiwatchMiddleware(app)): the 500 is sent, then the
    # exception re-raised. The span was ended with the last body chunk, so the exception came too late for it: no
    # exception event, error.type "500"
    app = AiwatchMiddleware(inner(), registry=registry, tracer_provider=provider, service="svc")
    with pytest.raises(Boom) as raised:
        await call(app, "/boom")
    assert str(raised.value) == "no"
    server = only(exporter, SpanKind.SERVER)
    assert attributes(server)["http.response.status_code"] == 500
    assert attributes(server)["error.type"] == "Boom"
    assert server.status.status_code is StatusCode.ERROR
    assert [(e.name, (e.attributes or {}).get("exception.type")) for e in server.events] == [
        ("exception", f"{Boom.__module__}.Boom")]
    # the request itself is recorded once, as the 500 it was
    requests = [(sample.labels["status"], sample.value) for metric in registry.collect() for sample in metric.samples
                if sample.name == "aiwatch_request_duration_seconds_count"]
    assert requests == [("500", 1.0)]


async def test_the_server_span_still_ends_with_the_response_not_with_the_work_after_it(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    # the span of a response sent before the app returns is ended once the app returns (an exception may follow),
    # at the time the response was sent: a background task that runs after the response is not in its duration
    started: list[int] = []

    async def later() -> None:
        started.append(time.time_ns())

    async def endpoint(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok", background=BackgroundTask(later))

    app = AiwatchMiddleware(Starlette(routes=[Route("/r", endpoint)]), registry=registry, tracer_provider=provider)
    assert (await call(app, "/r")).status == 200
    server = only(exporter, SpanKind.SERVER)
    assert started and server.end_time is not None and server.end_time <= started[0]
    assert server.status.status_code is StatusCode.UNSET and not server.events


async def test_unknown_method_is_other_with_the_original(registry: CollectorRegistry, provider: TracerProvider,
                                                         exporter: InMemorySpanExporter) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = aiwatch.instrument(raw, registry=registry, tracer_provider=provider,
                             route_resolver=lambda scope: "/things")
    assert (await call(app, "/things", method="PURGE")).status == 204
    server = only(exporter, SpanKind.SERVER)
    assert server.name == "HTTP /things"
    assert attributes(server)["http.request.method"] == "_OTHER"
    assert attributes(server)["http.request.method_original"] == "PURGE"


async def test_unmatched_route_names_the_span_by_method_only(registry: CollectorRegistry,
                                                              provider: TracerProvider,
                                                              exporter: InMemorySpanExporter) -> None:
    app = aiwatch.instrument(fastapi_app(), registry=registry, tracer_provider=provider)
    assert (await call(app, "/no/such/path")).status == 404
    server = only(exporter, SpanKind.SERVER)
    assert server.name == "GET"
    assert "http.route" not in attributes(server)


def test_wsgi_server_span_has_every_stable_http_attribute(registry: CollectorRegistry, provider: TracerProvider,
                                                          exporter: InMemorySpanExporter) -> None:
    app = Flask("semconv")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        with aiwatch.phase("inference"):
            pass
        return ({"id": item_id}, 500) if item_id == 0 else {"id": item_id}

    aiwatch.instrument(app, registry=registry, tracer_provider=provider)
    client = app.test_client()
    assert client.get("/items/3?q=1", headers={"traceparent": TRACEPARENT, "User-Agent": "curl/8.5.0"},
                      buffered=True, base_url="https://api.example:8443",
                      environ_overrides={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/items/0", buffered=True).status_code == 500
    ok, failed = spans_of(exporter, SpanKind.SERVER)
    assert ok.name == "GET /items/<int:item_id>"
    assert attributes(ok) == {
        "http.request.method": "GET", "http.route": "/items/<int:item_id>", "http.response.status_code": 200,
        "url.scheme": "https", "url.path": "/items/3", "url.query": "q=1", "server.address": "api.example",
        "server.port": 8443, "network.protocol.version": "1.1", "client.address": "10.1.2.3",
        "user_agent.original": "curl/8.5.0"}
    assert f"{ok.context.trace_id:032x}" == TRACE_ID
    assert ok.status.status_code is StatusCode.UNSET
    assert attributes(failed)["http.response.status_code"] == 500 and attributes(failed)["error.type"] == "500"
    assert failed.status.status_code is StatusCode.ERROR


async def test_app_spans_are_children_of_aiwatchs_server_span(registry: CollectorRegistry,
                                                              provider: TracerProvider,
                                                              exporter: InMemorySpanExporter) -> None:
    """aiwatch's SERVER span is current while the app runs: a span the app starts is its child, and OpenTelemetry's
    ASGI middleware placed behind aiwatch's makes an INTERNAL span, not a second SERVER span."""
    tracer = provider.get_tracer("app")

    async def endpoint(request: Any) -> PlainTextResponse:
        with tracer.start_as_current_span("db"):
            pass
        return PlainTextResponse("ok")

    inner = OpenTelemetryMiddleware(Starlette(routes=[Route("/q/{n}", endpoint)]), tracer_provider=provider)
    app = aiwatch.instrument(inner, registry=registry, tracer_provider=provider,
                             route_resolver=lambda scope: "/q/{n}")
    assert (await call(app, "/q/1")).status == 200
    server = only(exporter, SpanKind.SERVER)
    assert server.instrumentation_scope is not None and server.instrumentation_scope.name == "aiwatch"
    db = next(s for s in exporter.get_finished_spans() if s.name == "db")
    otel = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.INTERNAL and s.name != "db"
                and s.instrumentation_scope is not None
                and s.instrumentation_scope.name.startswith("opentelemetry.instrumentation.asgi")
                and s.parent is not None and s.parent.span_id == server.context.span_id)
    assert db.context.trace_id == server.context.trace_id == otel.context.trace_id


# --- servers with OpenTelemetry's instrumentation in front ----------------------------------------------------------
async def test_otel_asgi_middleware_in_front_owns_the_only_server_span(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    app = OpenTelemetryMiddleware(aiwatch.instrument(fastapi_app(), registry=registry, tracer_provider=provider),
                                  tracer_provider=provider)
    assert (await call(app, "/items/7", headers=[("traceparent", TRACEPARENT)])).status == 200
    server = only(exporter, SpanKind.SERVER)
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "opentelemetry.instrumentation.asgi"
    # aiwatch added the route OpenTelemetry's bare middleware cannot know, and named the span after it
    assert server.name == "GET /items/{item_id}"
    assert attributes(server)["http.route"] == "/items/{item_id}"
    phase = next(s for s in exporter.get_finished_spans() if s.name == "inference")
    assert phase.parent is not None and phase.parent.span_id == server.context.span_id
    # the exemplar carries OpenTelemetry's trace id
    samples = [s for m in registry.collect() if m.name == "aiwatch_request_duration_seconds" for s in m.samples
               if s.exemplar is not None]
    assert samples and samples[0].exemplar is not None
    assert samples[0].exemplar.labels["trace_id"] == f"{server.context.trace_id:032x}" == TRACE_ID


async def test_fastapi_instrumentor_in_front_owns_the_only_server_span(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    app = aiwatch.instrument(fastapi_app(), registry=registry, tracer_provider=provider)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        assert (await call(app, "/broken")).status == 503
        assert (await call(app, "/items/2")).status == 200
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    broken, ok = spans_of(exporter, SpanKind.SERVER)
    for span in (broken, ok):
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "opentelemetry.instrumentation.fastapi"
    assert ok.name == "GET /items/{item_id}" and attributes(ok)["http.route"] == "/items/{item_id}"
    assert broken.status.status_code is StatusCode.ERROR  # OpenTelemetry's own status, untouched
    phase = next(s for s in exporter.get_finished_spans() if s.name == "inference")
    assert phase.parent is not None and phase.parent.span_id == ok.context.span_id
    assert registry.get_sample_value("aiwatch_request_duration_seconds_count", {"traffic_class": "realtime",
        "service": "app", "route": "/items/{item_id}", "method": "GET", "status": "200"}) == 1


def test_otel_wsgi_middleware_in_front_owns_the_only_server_span(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    app = Flask("otel-in-front")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        with aiwatch.phase("inference"):
            pass
        return {"id": item_id}

    aiwatch.instrument(app, registry=registry, tracer_provider=provider)
    app.wsgi_app = OpenTelemetryWSGIMiddleware(app.wsgi_app, tracer_provider=provider)  # type: ignore[method-assign]
    assert app.test_client().get("/items/1", buffered=True).status_code == 200
    server = only(exporter, SpanKind.SERVER)
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "opentelemetry.instrumentation.wsgi"
    assert server.name == "GET /items/<int:item_id>" and attributes(server)["http.route"] == "/items/<int:item_id>"
    phase = next(s for s in exporter.get_finished_spans() if s.name == "inference")
    assert phase.parent is not None and phase.parent.span_id == server.context.span_id


# --- clients ---------------------------------------------------------------------------------------------------
def client_expected(base: str, path: str, status: int) -> dict[str, Any]:
    port = int(base.rsplit(":", 1)[1])
    return {"http.request.method": "GET", "url.full": f"{base}{path}", "url.scheme": "http",
            "server.address": "127.0.0.1", "server.port": port, "http.response.status_code": status}


@pytest.mark.parametrize("kind", ["httpx", "httpx-async", "requests"])
async def test_client_span_has_every_stable_http_attribute(registry: CollectorRegistry, provider: TracerProvider,
                                                           exporter: InMemorySpanExporter, base: str,
                                                           kind: str) -> None:
    with aiwatch.client.route("/ok"):
        await _get(kind, registry, provider, f"{base}/ok")
    await _get(kind, registry, provider, f"{base}/missing")
    ok, missing = spans_of(exporter, SpanKind.CLIENT)
    assert ok.name == "GET /ok" and missing.name == "GET"  # {method} {route} when the call names its route
    assert attributes(ok) == client_expected(base, "/ok", 200)
    assert ok.status.status_code is StatusCode.UNSET
    assert attributes(missing) == {**client_expected(base, "/missing", 404), "error.type": "404"}
    assert missing.status.status_code is StatusCode.ERROR  # 4xx is an error on a client


async def _get(kind: str, registry: CollectorRegistry, provider: TracerProvider, url: str) -> None:
    if kind == "httpx":
        with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as c:
            c.get(url)
    elif kind == "httpx-async":
        async with aiwatch.client.instrument_httpx(httpx.AsyncClient(), registry=registry,
                                                   tracer_provider=provider) as ac:
            await ac.get(url)
    else:
        with aiwatch.client.instrument_requests(requests.Session(), registry=registry,
                                                tracer_provider=provider) as s:
            s.get(url)


def test_client_connection_error_is_its_error_type(registry: CollectorRegistry, provider: TracerProvider,
                                                   exporter: InMemorySpanExporter) -> None:
    with peer() as gone:
        pass  # the port is closed now
    with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as c, \
            pytest.raises(httpx.ConnectError):
        c.get(f"{gone}/ok")
    span = only(exporter, SpanKind.CLIENT)
    assert attributes(span)["error.type"] == "ConnectError"
    assert "http.response.status_code" not in attributes(span)
    assert span.status.status_code is StatusCode.ERROR


def test_client_url_full_hides_credentials_and_signatures(registry: CollectorRegistry, provider: TracerProvider,
                                                          exporter: InMemorySpanExporter, base: str) -> None:
    with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as c:
        c.get(base.replace("http://", "http://user:secret@") + "/ok?sig=abc&page=2")
    url = attributes(only(exporter, SpanKind.CLIENT))["url.full"]
    assert url == base.replace("http://", "http://REDACTED:REDACTED@") + "/ok?sig=REDACTED&page=2"


#: an AWS SigV4 presigned URL's query (the form S3 hands out for model weights and datasets), and an Azure SAS one
PRESIGNED = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261204%2Fus-east-1%2Fs3%2Faws4_request"
             "&X-Amz-Date=20261204T000000Z&X-Amz-Expires=900&X-Amz-Security-Token=IQoJb3JpZ2lu"
             "&X-Amz-SignedHeaders=host&X-Amz-Signature=0f1e2d3c&sig=azure%2Bsig&Sig=kept")
PRESIGNED_REDACTED = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=20261204T000000Z"
                      "&X-Amz-Expires=900&X-Amz-Security-Token=REDACTED&X-Amz-SignedHeaders=host"
                      "&X-Amz-Signature=REDACTED&sig=REDACTED&Sig=kept")  # keys are matched case-sensitively


def test_presigned_url_signatures_and_tokens_are_redacted_on_client_spans(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter, base: str) -> None:
    """The conventions' list (semantic conventions 1.3x): AWS SigV4's credential, security token and signature,
    Azure's ``sig``, Google's ``X-Goog-Signature``; the keys stay, as the conventions want."""
    with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as c:
        c.get(f"{base}/ok?{PRESIGNED}")
    assert attributes(only(exporter, SpanKind.CLIENT))["url.full"] == f"{base}/ok?{PRESIGNED_REDACTED}"


def test_api_keys_and_bearer_tokens_in_a_query_are_redacted(registry: CollectorRegistry, provider: TracerProvider,
                                                             exporter: InMemorySpanExporter, base: str) -> None:
    """Gemini's REST API takes its API key as ``?key=AIza...`` on every call, and RFC 6750 lets a bearer token
    travel as ``?access_token=``: both went onto every CLIENT span's ``url.full`` as sent."""
    with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as c:
        c.post(f"{base}/v1beta/models/gemini-2.0-flash:generateContent?key=AIzaSyD-s3cr3t&alt=sse&turnkey=1",
               json={})
        c.get(f"{base}/ok?access_token=ya29.s3cr3t")
    urls = sorted(str(attributes(s)["url.full"]) for s in spans_of(exporter, SpanKind.CLIENT))
    assert urls == [f"{base}/ok?access_token=REDACTED",
                    f"{base}/v1beta/models/gemini-2.0-flash:generateContent?key=REDACTED&alt=sse&turnkey=1"]


@pytest.mark.parametrize("kind", ["requests", "httpx"])
def test_a_failed_calls_exception_event_hides_what_url_full_hides(registry: CollectorRegistry,
                                                                  provider: TracerProvider,
                                                                  exporter: InMemorySpanExporter, kind: str) -> None:
    """A presigned URL whose host refuses the connection: requests' ``ConnectionError`` quotes the path and query
    (urllib3's "Max retries exceeded with url: /o?...X-Amz-Signature=0f1e2d3c..."), and the span's ``exception``
    event carried the signature, the credential and the token that ``url.full`` hides to the tracing backend."""
    with peer() as gone:
        pass  # the port is closed now
    url = gone.replace("http://", "http://user:secret@") + f"/o?{PRESIGNED}"
    if kind == "requests":
        with aiwatch.client.instrument_requests(requests.Session(), registry=registry, tracer_provider=provider) as s, \
                pytest.raises(requests.ConnectionError):
            s.get(url)
    else:
        with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as c, \
                pytest.raises(httpx.ConnectError):
            c.get(url)
    span = only(exporter, SpanKind.CLIENT)
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"].endswith("ConnectionError" if kind == "requests" else "ConnectError")
    text = f"{dict(span.attributes or {})} {dict(event.attributes)}"
    for secret in ("0f1e2d3c", "AKIAEXAMPLE", "IQoJb3JpZ2lu", "azure%2Bsig", "secret"):
        assert secret not in text
    if kind == "requests":  # the message still says where and why
        assert "X-Amz-Signature=REDACTED" in event.attributes["exception.message"]
        assert "Max retries exceeded" in event.attributes["exception.message"]
        assert "X-Amz-Signature=REDACTED" in event.attributes["exception.stacktrace"]


async def test_presigned_query_is_redacted_on_asgi_server_spans(registry: CollectorRegistry,
                                                                provider: TracerProvider,
                                                                exporter: InMemorySpanExporter) -> None:
    app = aiwatch.instrument(fastapi_app(), registry=registry, tracer_provider=provider)
    assert (await call(app, "/items/7", query=PRESIGNED)).status == 200
    assert attributes(only(exporter, SpanKind.SERVER))["url.query"] == PRESIGNED_REDACTED


def test_presigned_query_is_redacted_on_wsgi_server_spans(registry: CollectorRegistry, provider: TracerProvider,
                                                          exporter: InMemorySpanExporter) -> None:
    app = Flask("presigned")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    aiwatch.instrument(app, registry=registry, tracer_provider=provider)
    assert app.test_client().get(f"/items/3?{PRESIGNED}", buffered=True).status_code == 200
    assert attributes(only(exporter, SpanKind.SERVER))["url.query"] == PRESIGNED_REDACTED


def test_httpx_with_otel_instrumentation_has_one_client_span(registry: CollectorRegistry, provider: TracerProvider,
                                                             exporter: InMemorySpanExporter, base: str) -> None:
    """OpenTelemetry's httpx instrumentation patches the transport aiwatch wraps: aiwatch's span is current and HTTP
    instrumentation suppressed meanwhile, so there is one CLIENT span, and the peer sees its trace context."""
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as c:
            echoed = c.get(f"{base}/ok").json()
    finally:
        instrumentor.uninstrument()
    span = only(exporter, SpanKind.CLIENT)
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "aiwatch"
    assert attributes(span) == client_expected(base, "/ok", 200)
    assert echoed["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


def test_requests_with_otel_instrumentation_in_front_has_one_client_span(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter, base: str) -> None:
    """OpenTelemetry's requests instrumentation wraps Session.send, in front of aiwatch's adapter: its CLIENT span is
    the call's, aiwatch makes none, and still records the call's metrics."""
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with aiwatch.client.instrument_requests(requests.Session(), registry=registry, service="gw",
                                                tracer_provider=provider) as s:
            echoed = s.get(f"{base}/ok").json()
    finally:
        instrumentor.uninstrument()
    span = only(exporter, SpanKind.CLIENT)
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "opentelemetry.instrumentation.requests"
    assert echoed["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert registry.get_sample_value("aiwatch_client_request_duration_seconds_count", {
        "service": "gw", "peer": base.removeprefix("http://"), "route": "__unmatched__", "status": "200",
        "phase": ""}) == 1


# --- excluded URLs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("variable", "value"), [
    ("OTEL_PYTHON_EXCLUDED_URLS", "healthz,/other"),
    ("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "/other, healthz"),
    ("AIWATCH_EXCLUDED_URLS", r"/health[z]{1,2}$"),
])
async def test_excluded_urls_are_neither_timed_nor_traced(registry: CollectorRegistry, provider: TracerProvider,
                                                          exporter: InMemorySpanExporter,
                                                          monkeypatch: pytest.MonkeyPatch, variable: str,
                                                          value: str) -> None:
    monkeypatch.setenv(variable, value)
    app = fastapi_app()

    @app.get("/healthz")
    async def health() -> str:
        return "ok"

    aiwatch.instrument(app, registry=registry, tracer_provider=provider)
    assert (await call(app, "/healthz")).status == 200
    assert (await call(app, "/items/1")).status == 200
    assert [s.name for s in spans_of(exporter, SpanKind.SERVER)] == ["GET /items/{item_id}"]
    def count(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, with_defaults(name, labels))

    assert count("aiwatch_request_duration_seconds_count", {"service": "app", "route": "/healthz", "method": "GET",
                                                            "status": "200"}) is None
    assert count("aiwatch_request_duration_seconds_count", {"service": "app", "route": "/items/{item_id}",
                                                            "method": "GET", "status": "200"}) == 1


async def test_another_instrumentations_variable_does_not_apply(registry: CollectorRegistry,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_PYTHON_FLASK_EXCLUDED_URLS`` is Flask's: a FastAPI app reads the FastAPI or generic one."""
    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "items")
    app = aiwatch.instrument(fastapi_app(), registry=registry)
    assert (await call(app, "/items/1")).status == 200
    assert registry.get_sample_value("aiwatch_request_duration_seconds_count", {"traffic_class": "realtime",
        "service": "app", "route": "/items/{item_id}", "method": "GET", "status": "200"}) == 1


def test_wsgi_excluded_urls_from_its_variable(registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_WSGI_EXCLUDED_URLS", "/skip")

    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    app = aiwatch.instrument(wsgi, registry=registry, route_resolver=lambda environ: environ["PATH_INFO"])
    for path in ("/skip", "/keep"):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "h", "SERVER_PORT": "80",
                   "wsgi.url_scheme": "http"}
        body = app(environ, lambda status, headers, exc_info=None: None)
        list(body)
        getattr(body, "close", lambda: None)()
    def value(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, with_defaults(name, labels))

    assert value("aiwatch_request_duration_seconds_count", {"service": "app", "route": "/skip", "method": "GET",
                                                            "status": "200"}) is None
    assert value("aiwatch_request_duration_seconds_count", {"service": "app", "route": "/keep", "method": "GET",
                                                            "status": "200"}) == 1


async def test_the_aiwatch_regex_may_start_with_inline_flags(registry: CollectorRegistry,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``(?i)/healthz$`` is one valid regular expression; before, it was wrapped in ``(?:...)`` and Python refused
    the flags there, so instrumenting the app failed with re.error (global flags not at the start)."""
    monkeypatch.setenv("AIWATCH_EXCLUDED_URLS", "(?i)/healthz$")
    app = fastapi_app()

    @app.get("/HEALTHZ")
    async def health() -> str:
        return "ok"

    aiwatch.instrument(app, registry=registry)
    assert (await call(app, "/HEALTHZ")).status == 200
    assert (await call(app, "/items/1")).status == 200
    routes = {s.labels["route"] for m in registry.collect() for s in m.samples
              if s.name == "aiwatch_request_duration_seconds_count"}
    assert routes == {"/items/{item_id}"}


@pytest.mark.parametrize(("variable", "value", "kind"), [
    ("OTEL_PYTHON_EXCLUDED_URLS", "healthz, /api/(v1", "fastapi"),
    ("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "[", "fastapi"),
    ("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "*ping", "flask"),
    ("AIWATCH_EXCLUDED_URLS", "/health(z", "fastapi"),
])
def test_a_bad_excluded_urls_regex_is_an_error_naming_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str,
                                                                   value: str, kind: str) -> None:
    """Before, the operator got a bare re.error ("missing ), unterminated subpattern at position 5") that named
    neither the variable nor the value."""
    monkeypatch.setenv(variable, value)
    app = fastapi_app() if kind == "fastapi" else Flask("bad_regex")
    with pytest.raises(ValueError, match=f"^{variable}: .* is not a valid regular expression"):
        aiwatch.instrument(app, registry=CollectorRegistry())


@pytest.mark.parametrize("middleware", [AiwatchMiddleware, AiwatchWSGIMiddleware])
def test_a_bad_excluded_urls_argument_is_an_error_naming_it(middleware: Any) -> None:
    with pytest.raises(ValueError, match=r"^excluded_urls: '\(' is not a valid regular expression"):
        middleware(lambda *args: None, registry=CollectorRegistry(), excluded_urls="(")


class _StatusSpan:
    """What both OpenTelemetry's ``set_status_code`` and aiwatch's ``end_http_server_span`` set on a span."""

    def __init__(self) -> None:
        self.attributes: dict[str, object] = {}
        self.status: Any = None

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: object) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: dict[str, object]) -> None:
        self.attributes.update(attributes)

    def set_status(self, status: Any) -> None:
        self.status = status

    def update_name(self, name: str) -> None:
        pass

    def seen(self) -> tuple[object, object, object]:
        code = self.status.status_code if self.status is not None else StatusCode.UNSET
        return (self.attributes.get("http.response.status_code"), self.attributes.get("error.type"), code)


@pytest.mark.parametrize("status", ["503", "5e2", "teapot", "-1", True, "42", 42, "0", 503.0, " 503 ", b"503", 204,
                                    "204", 404, 500, 599, 600, -3, 503.7])
def test_a_status_is_read_as_opentelemetrys_asgi_middleware_reads_it(status: object) -> None:
    from opentelemetry.instrumentation._semconv import _StabilityMode
    from opentelemetry.instrumentation.asgi import set_status_code

    theirs, ours = _StatusSpan(), _StatusSpan()
    set_status_code(theirs, status, sem_conv_opt_in_mode=_StabilityMode.HTTP)
    semconv.end_http_server_span(ours, True, "GET", None, status, None)  # type: ignore[arg-type]
    assert ours.seen() == theirs.seen()


@pytest.mark.parametrize("host", [b"api.example:\xb2", b"api.example:99999999999999999999", b"api.example:65536"])
async def test_a_host_header_whose_port_is_no_port_still_gives_a_span(registry: CollectorRegistry,
                                                                    provider: TracerProvider,
                                                                    exporter: InMemorySpanExporter,
                                                                    host: bytes) -> None:
    """A client's Host with a byte that Latin-1 reads as a digit (0xB2, ``²``) or a huge number as its port: the
    request is traced (for ``²`` the span was dropped and a tracing failure counted before), with server.address and
    no server.port (a number past int64 would have made an OTLP exporter refuse the batch)."""
    inner = aiwatch.instrument(fastapi_app(), registry=registry, tracer_provider=provider)

    async def app(scope: Any, receive: Any, send: Any) -> None:  # the raw bytes a client sent, as a server passes them
        await inner(dict(scope, headers=[(b"host", host)]), receive, send)

    assert (await call(app, "/items/7")).status == 200
    found = attributes(only(exporter, SpanKind.SERVER))
    assert found["server.address"] == "api.example" and "server.port" not in found
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "tracing"}) == 0
