"""OpenTelemetry's header-capture variables (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*``) on the spans aiwatch
makes: server request headers given to the span at its start (a sampler sees them), response headers as sent,
client request and response headers, sanitized values, the stable conventions' names (lowercase, dashes kept), bad
patterns refused with the variable named, a failure counted and never raised, and nothing captured by default or on
a span another instrumentation owns."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
import requests
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import aiwatch
import aiwatch.client
from aiwatch import headercapture
from aiwatch.headercapture import (
    MAX_DECIDED_NAME_LENGTH,
    MAX_DECIDED_NAMES,
    REDACTED,
    HeaderCapture,
    environ_headers,
    header_patterns,
)
from aiwatch.middleware.asgi import AiwatchMiddleware
from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware
from tests.http.asgi_driver import call
from tests.http.peer import peer

SERVER_REQUEST = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"
SERVER_RESPONSE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE"
CLIENT_REQUEST = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST"
CLIENT_RESPONSE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE"
SANITIZE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
VARIABLES = (SERVER_REQUEST, SERVER_RESPONSE, CLIENT_REQUEST, CLIENT_RESPONSE, SANITIZE)


@pytest.fixture(autouse=True)
def _no_capture_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


class RecordingSampler(Sampler):
    """Samples everything, keeping the attributes each span was started with (what any sampler could read)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None) -> SamplingResult:
        self.seen.append(dict(attributes or {}))
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "RecordingSampler"


def requests_recorded(registry: CollectorRegistry) -> float:
    return sum(sample.value for family in registry.collect() for sample in family.samples
               if sample.name == "aiwatch_request_duration_seconds_count")


def header_attributes(span: ReadableSpan) -> dict[str, Any]:
    return {k: v for k, v in (span.attributes or {}).items() if ".header." in k}


def only_server(exporter: InMemorySpanExporter) -> ReadableSpan:
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(servers) == 1, [s.name for s in exporter.get_finished_spans()]
    return servers[0]


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hi", headers={"X-Model-Version": "v7", "Set-Cookie": "session=abc"})


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/hello", hello)])


REQUEST_HEADERS = [("X-Tenant", "acme"), ("x-tenant", "beta"), ("Authorization", "Bearer s3cr3t"),
                   ("X_Under", "u"), ("Accept", "*/*")]


# --- ASGI ------------------------------------------------------------------------------------------------------
async def test_asgi_server_span_captures_the_configured_request_headers_at_its_start(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, exporter: InMemorySpanExporter) -> None:
    monkeypatch.setenv(SERVER_REQUEST, "x-tenant, authorization,X_UNDER")
    monkeypatch.setenv(SANITIZE, "auth")
    sampler = RecordingSampler()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = AiwatchMiddleware(starlette_app(), registry=registry, tracer_provider=provider)
    assert (await call(app, "/hello", headers=REQUEST_HEADERS)).status == 200
    expected = {"http.request.header.x-tenant": ("acme", "beta"),  # each line apart, in order
                "http.request.header.authorization": (REDACTED,),
                "http.request.header.x_under": ("u",)}  # the name as sent: an underscore stays one
    assert header_attributes(only_server(exporter)) == expected
    assert len(sampler.seen) == 1
    assert {k: tuple(v) for k, v in sampler.seen[0].items() if ".header." in k} == expected


async def test_asgi_server_span_captures_the_response_headers_as_sent(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    monkeypatch.setenv(SERVER_RESPONSE, "x-model-.*,server-timing,set-cookie")
    monkeypatch.setenv(SANITIZE, ".*cookie.*")
    app = AiwatchMiddleware(starlette_app(), registry=registry, tracer_provider=provider)
    resp = await call(app, "/hello")
    attributes = header_attributes(only_server(exporter))
    assert attributes.pop("http.response.header.x-model-version") == ("v7",)
    assert attributes.pop("http.response.header.set-cookie") == (REDACTED,)
    (timing,) = attributes.pop("http.response.header.server-timing")  # aiwatch's own header, as the client saw it
    assert timing == resp.headers["server-timing"] and "total;dur=" in timing
    assert attributes == {}


async def test_nothing_is_captured_by_default(registry: CollectorRegistry, provider: TracerProvider,
                                              exporter: InMemorySpanExporter) -> None:
    app = AiwatchMiddleware(starlette_app(), registry=registry, tracer_provider=provider)
    assert (await call(app, "/hello", headers=REQUEST_HEADERS)).status == 200
    assert header_attributes(only_server(exporter)) == {}


async def test_a_span_opentelemetrys_middleware_owns_gets_no_header_of_aiwatchs(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    """OpenTelemetry's ASGI middleware in front reads the same variables and captures into its own span (with
    underscores, 0.66b2's names); aiwatch adds nothing to it."""
    monkeypatch.setenv(SERVER_REQUEST, "x-tenant")
    monkeypatch.setenv(SERVER_RESPONSE, "x-model-version")
    inner = AiwatchMiddleware(starlette_app(), registry=registry, tracer_provider=provider)
    app = OpenTelemetryMiddleware(inner, tracer_provider=provider, exclude_spans=["send", "receive"])
    assert (await call(app, "/hello", headers=REQUEST_HEADERS)).status == 200
    server = only_server(exporter)
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "opentelemetry.instrumentation.asgi"
    assert set(header_attributes(server)) == {"http.request.header.x_tenant", "http.response.header.x_model_version"}


async def test_fastapis_own_span_gets_the_headers_from_aiwatch(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    """aiwatch.instrument(app) on a FastAPI app that traces itself (0.136+): FastAPI's SERVER span is the request's,
    and FastAPI captures no header, so aiwatch puts the configured ones on it."""
    pytest.importorskip("fastapi.telemetry", reason="FastAPI traces requests itself from 0.136")
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse as FastAPIText

    monkeypatch.setenv(SERVER_REQUEST, "x-tenant")
    monkeypatch.setenv(SERVER_RESPONSE, "x-model-version")
    app = FastAPI(telemetry={"tracer_provider": provider})  # type: ignore[call-arg,unused-ignore]

    @app.get("/hello")
    async def hello_route() -> FastAPIText:
        return FastAPIText("hi", headers={"X-Model-Version": "v7"})

    aiwatch.instrument(app, registry=registry, tracer_provider=provider)
    assert (await call(app, "/hello", headers=REQUEST_HEADERS)).status == 200
    server = only_server(exporter)
    assert server.instrumentation_scope is not None and server.instrumentation_scope.name == "fastapi"
    assert header_attributes(server) == {"http.request.header.x-tenant": ("acme", "beta"),
                                         "http.response.header.x-model-version": ("v7",)}


# --- WSGI ------------------------------------------------------------------------------------------------------
def test_wsgi_server_span_captures_request_and_response_headers(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    monkeypatch.setenv(SERVER_REQUEST, "x-tenant,content-type,x-api-key")
    monkeypatch.setenv(SERVER_RESPONSE, "x-model-version")
    monkeypatch.setenv(SANITIZE, "api-key")
    app = Flask("capture")

    @app.post("/predict")
    def predict() -> Any:
        return "ok", 200, {"X-Model-Version": "v7"}

    aiwatch.instrument(app, registry=registry, tracer_provider=provider)
    response = app.test_client().post("/predict", data=b"{}", headers={
        "X-Tenant": "acme", "Content-Type": "application/json", "X-Api-Key": "s3cr3t", "Accept": "*/*"}, buffered=True)
    assert response.status_code == 200
    assert header_attributes(only_server(exporter)) == {
        "http.request.header.x-tenant": ("acme",), "http.request.header.content-type": ("application/json",),
        "http.request.header.x-api-key": (REDACTED,), "http.response.header.x-model-version": ("v7",)}


@pytest.mark.parametrize("owner", ["opentelemetry.instrumentation.wsgi", "another.framework"])
def test_a_borrowed_wsgi_span_gets_the_headers_only_when_its_owner_is_not_opentelemetrys(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter, owner: str) -> None:
    """A SERVER span current when the WSGI middleware runs is the request's: OpenTelemetry's instrumentations capture
    headers themselves; any other owner gets aiwatch's."""
    monkeypatch.setenv(SERVER_REQUEST, "x-tenant")
    monkeypatch.setenv(SERVER_RESPONSE, "x-model-version")

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-Model-Version", "v7")])
        return [b"ok"]

    inner = AiwatchWSGIMiddleware(app, registry=registry, tracer_provider=provider, metrics_path=None)
    tracer = provider.get_tracer(owner)

    def outer(environ: dict[str, Any], start_response: Any) -> Any:
        with tracer.start_as_current_span("GET", kind=SpanKind.SERVER):
            body = inner(environ, start_response)
            return list(body)

    from werkzeug.test import Client

    response = Client(outer).get("/", headers={"X-Tenant": "acme"})
    assert response.status_code == 200
    expected = {} if owner.startswith("opentelemetry.") else {"http.request.header.x-tenant": ("acme",),
                                                              "http.response.header.x-model-version": ("v7",)}
    assert header_attributes(only_server(exporter)) == expected


def test_wsgi_environ_headers_are_named_as_opentelemetry_names_them() -> None:
    environ = {"HTTP_X_API_KEY": "k", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "2", "PATH_INFO": "/",
               "wsgi.input": object(), 7: "not a header", "HTTP_BAD": b"bytes"}
    assert sorted(environ_headers(environ)) == [("X-API-KEY", "k"), ("content-length", "2"),
                                                ("content-type", "text/plain")]


# --- clients ---------------------------------------------------------------------------------------------------
class _ShardHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("X-Shard", "1")
        self.send_header("X-Shard", "2")
        self.send_header("Set-Cookie", "session=abc")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def shard_peer() -> Iterator[str]:
    with peer(_ShardHandler) as url:
        yield url


def only_client(exporter: InMemorySpanExporter) -> ReadableSpan:
    clients = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(clients) == 1, [s.name for s in exporter.get_finished_spans()]
    return clients[0]


def _client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CLIENT_REQUEST, ".*")  # every header the application sent: not the trace context
    monkeypatch.setenv(CLIENT_RESPONSE, "x-shard,set-cookie")
    monkeypatch.setenv(SANITIZE, "authorization,set-cookie")


@pytest.mark.parametrize("streamed", [False, True])
def test_httpx_client_span_captures_request_and_response_headers(
        monkeypatch: pytest.MonkeyPatch, shard_peer: str, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter, streamed: bool) -> None:
    _client_env(monkeypatch)
    headers = [("X-Tenant", "acme"), ("Authorization", "Bearer s3cr3t")]
    with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as client:
        if streamed:
            with client.stream("GET", f"{shard_peer}/x", headers=headers) as response:
                response.read()
        else:
            response = client.get(f"{shard_peer}/x", headers=headers)
    assert response.status_code == 200
    attributes = header_attributes(only_client(exporter))
    assert attributes["http.request.header.x-tenant"] == ("acme",)
    assert attributes["http.request.header.authorization"] == (REDACTED,)
    assert "http.request.header.traceparent" not in attributes
    assert attributes["http.response.header.x-shard"] == ("1", "2")  # httpx keeps the two lines apart
    assert attributes["http.response.header.set-cookie"] == (REDACTED,)


async def test_async_httpx_client_span_captures_response_headers(
        monkeypatch: pytest.MonkeyPatch, shard_peer: str, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    _client_env(monkeypatch)
    async with aiwatch.client.instrument_httpx(httpx.AsyncClient(), registry=registry,
                                               tracer_provider=provider) as client:
        assert (await client.get(f"{shard_peer}/x")).status_code == 200
    assert header_attributes(only_client(exporter))["http.response.header.x-shard"] == ("1", "2")


def test_requests_client_span_captures_request_and_response_headers(
        monkeypatch: pytest.MonkeyPatch, shard_peer: str, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    _client_env(monkeypatch)
    session = aiwatch.client.instrument_requests(requests.Session(), registry=registry, tracer_provider=provider)
    assert session.get(f"{shard_peer}/x", headers={"X-Tenant": "acme", "X-Bytes": b"raw"}).status_code == 200
    attributes = header_attributes(only_client(exporter))
    assert attributes["http.request.header.x-tenant"] == ("acme",)
    assert attributes["http.request.header.x-bytes"] == ("raw",)  # requests takes bytes values: text on the span
    assert "http.request.header.traceparent" not in attributes
    assert attributes["http.response.header.x-shard"] == ("1, 2",)  # urllib3 joins them
    assert attributes["http.response.header.set-cookie"] == (REDACTED,)


# --- credentials captured with a wide pattern ------------------------------------------------------------------
CREDENTIALS = [("Authorization", "Bearer s3cr3t-token"), ("Proxy-Authorization", "Basic cHJveHk6czNjcjN0"),
               ("Cookie", "session=s3cr3t-session"), ("X-Api-Key", "s3cr3t-key"), ("api-key", "s3cr3t-azure"),
               ("X-Tenant", "acme")]
REDACTED_CREDENTIALS = {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}


def _no_credential_on(span: ReadableSpan, direction: str = "request") -> dict[str, Any]:
    attributes = header_attributes(span)
    assert "s3cr3t" not in repr(attributes)
    for name in REDACTED_CREDENTIALS:
        assert attributes[f"http.{direction}.header.{name}"] == (REDACTED,)
    return attributes


async def test_a_wide_pattern_without_a_sanitize_list_captures_no_credential_on_asgi(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    """``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=.*`` with no sanitize list (the variable is
    separate, and easily forgotten) put every client's bearer token, API key and session cookie on the spans, and
    ``..._SERVER_RESPONSE=.*`` every ``Set-Cookie`` the app sent."""
    monkeypatch.setenv(SERVER_REQUEST, ".*")
    monkeypatch.setenv(SERVER_RESPONSE, ".*")
    app = AiwatchMiddleware(starlette_app(), registry=registry, tracer_provider=provider)
    assert (await call(app, "/hello", headers=CREDENTIALS)).status == 200
    attributes = _no_credential_on(only_server(exporter))
    assert attributes["http.request.header.x-tenant"] == ("acme",)
    assert attributes["http.response.header.set-cookie"] == (REDACTED,)
    assert attributes["http.response.header.x-model-version"] == ("v7",)


def test_a_wide_pattern_without_a_sanitize_list_captures_no_credential_on_wsgi(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    monkeypatch.setenv(SERVER_REQUEST, ".*")
    app = Flask("wide")

    @app.get("/hello")
    def hello() -> str:
        return "hi"

    aiwatch.instrument(app, registry=registry, tracer_provider=provider)
    # without its cookie jar, werkzeug's client sends the Cookie header given
    assert app.test_client(use_cookies=False).get("/hello", headers=CREDENTIALS, buffered=True).status_code == 200
    assert _no_credential_on(only_server(exporter))["http.request.header.x-tenant"] == ("acme",)


@pytest.mark.parametrize("kind", ["httpx", "requests"])
def test_a_wide_pattern_without_a_sanitize_list_captures_no_credential_on_clients(
        monkeypatch: pytest.MonkeyPatch, shard_peer: str, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter, kind: str) -> None:
    monkeypatch.setenv(CLIENT_REQUEST, ".*")
    monkeypatch.setenv(CLIENT_RESPONSE, ".*")
    monkeypatch.setenv(SANITIZE, "x-unrelated")  # a sanitize list of one's own adds to the credentials, never less
    if kind == "httpx":
        with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as c:
            assert c.get(f"{shard_peer}/x", headers=CREDENTIALS).status_code == 200
    else:
        session = aiwatch.client.instrument_requests(requests.Session(), registry=registry, tracer_provider=provider)
        assert session.get(f"{shard_peer}/x", headers=dict(CREDENTIALS)).status_code == 200
    attributes = _no_credential_on(only_client(exporter))
    assert attributes["http.request.header.x-tenant"] == ("acme",)
    assert attributes["http.response.header.set-cookie"] == (REDACTED,)  # the peer's session=abc


# --- bad configuration, faults ---------------------------------------------------------------------------------
@pytest.mark.parametrize("variable", VARIABLES)
def test_a_pattern_that_is_no_regex_is_refused_naming_its_variable(monkeypatch: pytest.MonkeyPatch,
                                                                   variable: str) -> None:
    monkeypatch.setenv(variable, "x-ok, x-(unclosed")
    message = re.escape(f"{variable}: 'x-(unclosed' is no regular expression")
    makers = []
    if "_CLIENT_" not in variable:
        makers += [lambda: AiwatchMiddleware(starlette_app(), registry=CollectorRegistry()),
                   lambda: AiwatchWSGIMiddleware(Flask("bad"), registry=CollectorRegistry(), metrics_path=None),
                   lambda: aiwatch.instrument(starlette_app(), registry=CollectorRegistry())]
    if "_SERVER_" not in variable:
        makers.append(lambda: aiwatch.client.ClientRecorder(registry=CollectorRegistry()))
    for make in makers:
        with pytest.raises(ValueError, match=message):
            make()


async def test_a_failure_while_capturing_is_counted_and_the_request_served(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    monkeypatch.setenv(SERVER_REQUEST, "x-tenant")
    monkeypatch.setenv(SERVER_RESPONSE, "x-model-version")
    app = AiwatchMiddleware(starlette_app(), registry=registry, tracer_provider=provider)

    def broken(self: HeaderCapture, headers: Any) -> dict[str, list[str]]:
        raise RuntimeError("injected")

    monkeypatch.setattr(HeaderCapture, "asgi_request_attributes", broken)
    monkeypatch.setattr(HeaderCapture, "asgi_response_attributes", broken)
    resp = await call(app, "/hello", headers=REQUEST_HEADERS)
    assert (resp.status, resp.body) == (200, b"hi")
    server = only_server(exporter)  # the span is still made, without the headers
    assert header_attributes(server) == {} and server.name == "GET /hello"
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "tracing"}) == 2
    assert requests_recorded(registry) == 1


async def test_malformed_asgi_headers_are_counted_not_raised(
        monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    """A server that put text (not bytes) in the scope's headers: no capture, one counted failure, the request
    served and traced."""
    monkeypatch.setenv(SERVER_REQUEST, ".*")
    inner = AiwatchMiddleware(starlette_app(), registry=registry, tracer_provider=provider)

    async def text_headers(scope: Any, receive: Any, send: Any) -> None:
        scope = dict(scope, headers=[*scope["headers"], ("x-text", "not bytes")])
        await inner(scope, receive, send)

    assert (await call(text_headers, "/hello", headers=[("x-tenant", "acme")])).status == 200
    assert header_attributes(only_server(exporter)) == {}
    assert requests_recorded(registry) == 1
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "tracing"}) == 1


# --- the patterns and the capture, for any input -----------------------------------------------------------------
header_names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":,"),
                       min_size=1, max_size=20)
pairs = st.lists(st.tuples(header_names, st.text(max_size=20)), max_size=12)


@given(pairs, st.lists(header_names, min_size=1, max_size=4), st.lists(header_names, max_size=3))
def test_capture_takes_exactly_the_matching_headers(headers: Sequence[tuple[str, str]], wanted: list[str],
                                                    secret: list[str]) -> None:
    """Names given literally (escaped): a header is captured exactly when its lowercased name is one of them,
    its values in order, each redacted exactly when a sanitize name is found in it."""
    env = {SERVER_REQUEST: ",".join(re.escape(w) for w in wanted),
           SANITIZE: ",".join(re.escape(s) for s in secret)}
    capture = HeaderCapture.server(env)
    got = capture.request_attributes(headers)
    expected: dict[str, list[str]] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in {w.lower() for w in wanted}:
            redacted = any(s.lower() in lowered for s in secret)
            expected.setdefault("http.request.header." + lowered, []).append(REDACTED if redacted else value)
    assert got == expected


@given(st.text(max_size=40))
def test_any_variable_value_is_a_pattern_or_an_error_naming_it(value: str) -> None:
    try:
        pattern = header_patterns(headercapture.CAPTURE_SERVER_REQUEST_HEADERS, {SERVER_REQUEST: value})
    except ValueError as exc:
        assert str(exc).startswith(SERVER_REQUEST)
    else:
        assert (pattern is None) == (value.replace(",", "").strip() == "")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 accepts a global flag mid-pattern (a warning)")
def test_a_global_flag_that_cannot_be_combined_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match=re.escape(f"{SERVER_REQUEST}: its patterns cannot be combined")):
        HeaderCapture.server({SERVER_REQUEST: "x-a,(?i)x-b"})


def test_a_flood_of_header_names_keeps_the_decisions_bounded_and_right() -> None:
    """Names come from traffic: a client sending thousands of new ones never grows what a capture remembers past
    MAX_DECIDED_NAMES, and every answer stays right (bytes and text names alike)."""
    capture = HeaderCapture.server({SERVER_REQUEST: "x-keep-.*", SANITIZE: "secret"})
    decisions = capture._request
    assert decisions is not None
    for i in range(5 * MAX_DECIDED_NAMES):
        raw = [(f"x-flood-{i}".encode(), b"v"), (b"x-keep-me", b"a"), (b"x-keep-secret", b"b")]
        assert capture.asgi_request_attributes(raw) == {"http.request.header.x-keep-me": ["a"],
                                                        "http.request.header.x-keep-secret": [REDACTED]}
        assert capture.request_attributes([(f"X-Flood-{i}", "v"), ("X-Keep-Me", "a")]) == {
            "http.request.header.x-keep-me": ["a"]}
        assert len(decisions._decided) <= MAX_DECIDED_NAMES


def test_long_header_names_are_captured_but_never_remembered() -> None:
    """A client's 8 KiB header names: each is still decided right, and none is kept (the memo stays small)."""
    capture = HeaderCapture.server({SERVER_REQUEST: "x-.*"})
    decisions = capture._request
    assert decisions is not None
    for i in range(3):
        name = f"x-{i}-" + "a" * 8192
        assert capture.asgi_request_attributes([(name.encode(), b"v")]) == {"http.request.header." + name: ["v"]}
    assert capture.asgi_request_attributes([(b"x-short", b"v")]) == {"http.request.header.x-short": ["v"]}
    assert all(len(name) <= MAX_DECIDED_NAME_LENGTH for name in decisions._decided)
    assert list(decisions._decided) == [b"x-short"]


def test_a_client_capture_failure_is_counted_and_the_call_returns(
        monkeypatch: pytest.MonkeyPatch, shard_peer: str, registry: CollectorRegistry, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    _client_env(monkeypatch)

    def broken(self: HeaderCapture, headers: Any) -> dict[str, list[str]]:
        raise RuntimeError("injected")

    monkeypatch.setattr(HeaderCapture, "client_request_attributes", broken)
    monkeypatch.setattr(HeaderCapture, "client_response_attributes", broken)
    session = aiwatch.client.instrument_requests(requests.Session(), registry=registry, tracer_provider=provider)
    response = session.get(f"{shard_peer}/x", headers={"X-Tenant": "acme"})
    assert (response.status_code, response.content) == (200, b"ok")
    assert header_attributes(only_client(exporter)) == {}  # the span is still made, without the headers
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "tracing"}) == 2
