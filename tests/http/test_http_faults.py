"""Fault injection: aiwatch's own failures never fail or alter a request; each is counted by component and logged
once per burst. Run against both the ASGI (FastAPI) and the WSGI (Flask) middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
from fastapi import FastAPI
from flask import Flask
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

import aiwatch
import aiwatch.client
import aiwatch.instrument_app
import aiwatch.middleware.asgi
import aiwatch.tracing
from aiwatch import safety
from aiwatch.metrics import Metrics
from aiwatch.middleware.asgi import AiwatchMiddleware
from tests.http.asgi_driver import call
from tests.http.peer import peer

REQUESTS = 5
Run = Callable[[], tuple[int, bytes, dict[str, str]]]


@pytest.fixture(autouse=True)
def _fresh_burst_log(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(safety, "_burst", safety._BurstLog(burst_seconds=3600))


def build(kind: str, metrics: Metrics, **options: Any) -> Run:
    """An app with one endpoint (a phase inside), instrumented; returns a function running one request."""
    if kind == "asgi":
        api = FastAPI()

        @api.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            with aiwatch.phase("inference"):
                return {"id": item_id}

        aiwatch.instrument(api, metrics=metrics, service="svc", **options)

        def run_asgi() -> tuple[int, bytes, dict[str, str]]:
            resp = asyncio.run(call(api, "/items/7"))
            return resp.status, resp.body, resp.headers

        return run_asgi

    app = Flask("faults")

    @app.get("/items/<int:item_id>")
    def item_wsgi(item_id: int) -> dict[str, int]:
        with aiwatch.phase("inference"):
            return {"id": item_id}

    aiwatch.instrument(app, metrics=metrics, service="svc", **options)
    client = app.test_client()

    def run_wsgi() -> tuple[int, bytes, dict[str, str]]:
        resp = client.get("/items/7", buffered=True)
        return resp.status_code, resp.data, {k.lower(): v for k, v in resp.headers.items()}

    return run_wsgi


def errors(registry: CollectorRegistry, component: str) -> float | None:
    return registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": component})


def check_unaltered_and_counted(run: Run, registry: CollectorRegistry, component: str,
                                caplog: pytest.LogCaptureFixture, per_request: int = 1, at_start: int = 0) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")
    for _ in range(REQUESTS):
        status, body, _headers = run()
        assert status == 200
        assert body.replace(b" ", b"").strip() == b'{"id":7}'
    assert errors(registry, component) == at_start + REQUESTS * per_request
    logged = [r for r in caplog.records if r.name == "aiwatch" and f"aiwatch: {component} failed" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]


class _Boom(Exception):
    pass


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise _Boom("injected")


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_metric_that_raises(kind: str, metrics: Metrics, registry: CollectorRegistry,
                              monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(metrics.phase_duration, "labels", _raise)
    check_unaltered_and_counted(build(kind, metrics), registry, "metrics", caplog)
    assert registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 0


class _BrokenTracer:
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise _Boom("tracer down")


class _BrokenProvider:
    def get_tracer(self, *args: Any, **kwargs: Any) -> _BrokenTracer:
        return _BrokenTracer()


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_tracer_that_raises(kind: str, metrics: Metrics, registry: CollectorRegistry,
                              caplog: pytest.LogCaptureFixture) -> None:
    run = build(kind, metrics, tracer_provider=_BrokenProvider())
    check_unaltered_and_counted(run, registry, "tracing", caplog)
    count = registry.get_sample_value("aiwatch_request_duration_seconds_count", {"traffic_class": "realtime",
        "service": "svc", "route": "/items/{item_id}" if kind == "asgi" else "/items/<int:item_id>",
        "method": "GET", "status": "200"})
    assert count == REQUESTS  # metrics still recorded


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_span_that_cannot_be_made_current(kind: str, metrics: Metrics, registry: CollectorRegistry,
                                            monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture, provider: TracerProvider,
                                            exporter: InMemorySpanExporter) -> None:
    monkeypatch.setattr(aiwatch.tracing, "activate", _raise)  # e.g. a broken context implementation
    check_unaltered_and_counted(build(kind, metrics, tracer_provider=provider), registry, "tracing", caplog)
    # each request's SERVER span still ends and is exported (the phase spans are its children by explicit parent)
    server_spans = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert len(server_spans) == REQUESTS


def test_a_failure_looking_for_fastapis_own_span_is_counted(metrics: Metrics, registry: CollectorRegistry,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture,
                                                            provider: TracerProvider) -> None:
    """AiwatchMiddleware around a FastAPI app looks, at each traced response's start, for a SERVER span FastAPI's
    built-in telemetry opened (to warn of two spans per request): a failure there is counted, never raised."""
    api = FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    app = AiwatchMiddleware(api, metrics=metrics, service="svc", tracer_provider=provider)
    found = aiwatch.middleware.asgi.span_in_progress

    def broken_once_traced(kind: SpanKind) -> Any:
        """Fails where the look runs, at the response's start (aiwatch's span current), not at the request's."""
        if trace.get_current_span().is_recording():
            raise _Boom("injected")
        return found(kind)

    monkeypatch.setattr(aiwatch.middleware.asgi, "span_in_progress", broken_once_traced)

    def run() -> tuple[int, bytes, dict[str, str]]:
        resp = asyncio.run(call(app, "/items/7"))
        return resp.status, resp.body, resp.headers

    check_unaltered_and_counted(run, registry, "tracing", caplog)


@pytest.mark.parametrize("client_kind", ["httpx", "requests"])
def test_a_client_span_that_cannot_be_made_current_never_fails_the_call(
        client_kind: str, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch, provider: TracerProvider,
        exporter: InMemorySpanExporter) -> None:
    monkeypatch.setattr(aiwatch.tracing, "activate", _raise)
    options: dict[str, Any] = {"service": "gw", "registry": registry, "tracer_provider": provider}
    with peer() as base:
        if client_kind == "httpx":
            with aiwatch.client.instrument_httpx(httpx.Client(), **options) as c:
                statuses = [c.get(f"{base}/ok").status_code for _ in range(REQUESTS)]
        else:
            with aiwatch.client.instrument_requests(requests.Session(), **options) as s:
                statuses = [s.get(f"{base}/ok").status_code for _ in range(REQUESTS)]
    assert statuses == [200] * REQUESTS
    assert errors(registry, "tracing") == REQUESTS
    assert len(exporter.get_finished_spans()) == REQUESTS


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_hook_that_raises(kind: str, metrics: Metrics, registry: CollectorRegistry,
                            caplog: pytest.LogCaptureFixture) -> None:
    check_unaltered_and_counted(build(kind, metrics, on_request_end=_raise), registry, "hook", caplog)


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_route_resolver_that_raises(kind: str, metrics: Metrics, registry: CollectorRegistry,
                                      caplog: pytest.LogCaptureFixture) -> None:
    check_unaltered_and_counted(build(kind, metrics, route_resolver=_raise), registry, "route", caplog)
    assert registry.get_sample_value("aiwatch_request_duration_seconds_count", {"traffic_class": "realtime",
        "service": "svc", "route": "__unmatched__", "method": "GET", "status": "200"}) == REQUESTS


def test_a_failure_storing_the_flask_route_is_counted_and_the_request_answered(
        metrics: Metrics, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """aiwatch's Flask route hook runs inside the app's request (its first URL value preprocessor), unguarded: a
    failure of aiwatch's there raised into the app, which answered 500."""
    monkeypatch.setattr(aiwatch.instrument_app, "_store_flask_route", _raise)
    check_unaltered_and_counted(build("wsgi", metrics), registry, "route", caplog)
    assert registry.get_sample_value("aiwatch_request_duration_seconds_count", {"traffic_class": "realtime",
        "service": "svc", "route": "__unmatched__", "method": "GET", "status": "200"}) == REQUESTS


@pytest.mark.parametrize("client_kind", ["httpx", "requests"])
def test_a_malformed_server_timing_from_a_peer(client_kind: str, registry: CollectorRegistry,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aiwatch")
    with peer() as base:
        if client_kind == "httpx":
            with aiwatch.client.instrument_httpx(httpx.Client(), service="gw", registry=registry) as c:
                responses = [c.get(f"{base}/malformed") for _ in range(REQUESTS)]
        else:
            with aiwatch.client.instrument_requests(requests.Session(), service="gw", registry=registry) as s:
                responses = [s.get(f"{base}/malformed") for _ in range(REQUESTS)]  # type: ignore[misc]
    assert all(r.status_code == 200 and r.headers["server-timing"] == "total;dur=fast" for r in responses)
    assert all("host" in r.json() for r in responses)
    assert errors(registry, "server_timing") == REQUESTS
    assert registry.get_sample_value("aiwatch_network_duration_seconds_count",
                                     {"service": "gw", "peer": base.removeprefix("http://"), "phase": ""}) is None
    assert registry.get_sample_value("aiwatch_client_request_duration_seconds_count", {
        "service": "gw", "peer": base.removeprefix("http://"), "route": "__unmatched__", "status": "200",
        "phase": ""}) == REQUESTS
    logged = [r for r in caplog.records if "server_timing failed" in r.getMessage()]
    assert len(logged) == 1


def test_a_client_metric_that_raises_never_fails_the_call(metrics: Metrics, registry: CollectorRegistry,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics.client_request_duration, "labels", _raise)
    monkeypatch.setattr(metrics.network_duration, "labels", _raise)
    with peer() as base, aiwatch.client.instrument_httpx(httpx.Client(), metrics=metrics) as c:
        assert c.get(f"{base}/ok").status_code == 200
    assert errors(registry, "metrics") == 2


class _Exploding:
    def __getattr__(self, name: str) -> Any:
        raise _Boom("metric backend down")


class _BrokenMetrics(Metrics):
    """Every metric explodes on any use; only the error counter works."""

    def child(self, metric: Any, labels: Any) -> Any:
        if metric is self.instrumentation_errors:
            return super().child(metric, labels)
        return _Exploding()


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_every_metric_broken_from_the_start(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    broken = _BrokenMetrics(CollectorRegistry())
    # one failure when the recorder is built (its slow-threshold gauge), then two per request: the in-flight gauge
    # at the start, the request's metrics at the end
    check_unaltered_and_counted(build(kind, broken), broken.registry, "metrics", caplog, per_request=2, at_start=1)


async def _async_hook(*args: Any) -> str:
    return "/never-awaited"


@pytest.mark.parametrize("option", ["on_request_end", "route_resolver"])
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_an_async_hook_is_refused_when_the_app_is_instrumented(kind: str, option: str, metrics: Metrics) -> None:
    # aiwatch calls its hooks synchronously: an ``async def`` on_request_end never ran (its coroutine was dropped,
    # nothing counted) and an async route_resolver labelled each request with a new '<coroutine object ...>' route
    with pytest.raises(TypeError, match=rf"{option}.*_async_hook.*async"):
        build(kind, metrics, **{option: _async_hook})


def test_an_async_client_route_resolver_is_refused(registry: CollectorRegistry) -> None:
    with pytest.raises(TypeError, match=r"route_resolver.*_async_hook.*async"):
        aiwatch.client.instrument_httpx(httpx.AsyncClient(), registry=registry, route_resolver=_async_hook)


@pytest.mark.parametrize("returned", ["coroutine", "int"])
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_route_resolver_that_returns_no_str_is_counted_and_the_request_unmatched(
        kind: str, returned: str, metrics: Metrics, registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture) -> None:
    # a plain function handing back a coroutine passes the check at setup: each request was labelled with a new
    # route '<coroutine object ...>' (folded into __overflow__ only past the cardinality bound)
    def resolver(*args: Any) -> Any:
        return _async_hook() if returned == "coroutine" else 7

    check_unaltered_and_counted(build(kind, metrics, route_resolver=resolver), registry, "route", caplog)
    routes = {s.labels["route"] for f in registry.collect() if f.name == "aiwatch_request_duration_seconds"
              for s in f.samples if "route" in s.labels}
    assert routes == {"__unmatched__"}


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_hook_that_returns_an_awaitable_is_counted(kind: str, metrics: Metrics, registry: CollectorRegistry,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # a plain function that hands back a coroutine (a lambda around an async function) passes the check above: its
    # coroutine is closed (no 'never awaited' warning) and counted as the hook's failure
    check_unaltered_and_counted(build(kind, metrics, on_request_end=lambda *args: _async_hook()), registry, "hook",
                                caplog)


class _NoText:
    def __str__(self) -> str:
        raise RuntimeError("__str__ broke")


@pytest.mark.parametrize("status", [[503], _NoText()], ids=["unhashable", "no_text"])
def test_a_status_the_metrics_cannot_label_is_counted_and_passed_to_the_server(
        status: object, metrics: Metrics, registry: CollectorRegistry) -> None:
    # the status label was made outside any guard: aiwatch raised into the app's send() (no server sends such a
    # status, but the error is the server's to give, with the message the app sent)
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict[str, Any]] = []

    async def server_send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "", "headers": []}
    middleware = AiwatchMiddleware(app, metrics=metrics, service="svc", server_timing=False)
    asyncio.run(middleware(scope, receive, server_send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] is status
    assert errors(registry, "metrics") == 1
    assert registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "svc", "route": "__unmatched__", "method": "GET", "status": "500",
        "traffic_class": "realtime"}) == 1
