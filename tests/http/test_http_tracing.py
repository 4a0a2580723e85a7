"""Tracing through the middleware: SERVER span continuing traceparent, phase child spans, exemplars, and no span
work at all when tracing is off."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest
import requests
from fastapi import FastAPI
from flask import Flask, Response
from opentelemetry import baggage, trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import aiwatch
import aiwatch.client
from aiwatch.feedback import PredictionLog
from aiwatch.middleware.asgi import AiwatchMiddleware
from aiwatch.timing import RequestTimeline
from tests.http.asgi_driver import call
from tests.http.peer import peer
from tests.servers import uvicorn_in_thread, wait_until
from tests.spans import exemplar_trace_ids

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def fastapi_app(registry: CollectorRegistry, log: PredictionLog | None = None, **options: Any) -> FastAPI:
    """A traced app whose request has nested phases; ``log``: each request logs its prediction there."""
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        with aiwatch.phase("inference", model="ranker"), aiwatch.phase("tokenize"):
            if log is not None:
                log.log("ranker", {"item": item_id}, {"score": 1.0})
        with aiwatch.phase("postprocess"):
            pass
        return {"id": item_id}

    return aiwatch.instrument(app, registry=registry, service="svc", **options)


def _ancestor_ids(span_id: int, finished: Sequence[ReadableSpan]) -> list[int]:
    """The ids of the span ``span_id``'s parent, its parent's parent, ... among ``finished`` (up to the first
    parent that is not there: the trace's root, or a remote caller)."""
    by_id = {s.context.span_id: s for s in finished}
    out: list[int] = []
    span = by_id.get(span_id)
    while span is not None and span.parent is not None:
        out.append(span.parent.span_id)
        span = by_id.get(span.parent.span_id)
    return out


def check_spans(exporter: InMemorySpanExporter, route: str) -> None:
    # only aiwatch's spans (FastAPI's own telemetry also traces when a global provider is installed) of this
    # request's trace (servers other tests left running pick up a global provider too)
    spans = {s.name: s for s in exporter.get_finished_spans()
             if s.instrumentation_scope is not None and s.instrumentation_scope.name == "aiwatch"
             and f"{s.context.trace_id:032x}" == TRACE_ID}
    server = spans[f"GET {route}"]
    assert server.kind is SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == TRACE_ID  # continues the caller's trace
    assert server.parent is not None and f"{server.parent.span_id:016x}" == PARENT_ID
    assert server.attributes is not None and server.attributes["http.route"] == route
    inference, tokenize, post = spans["inference"], spans["tokenize"], spans["postprocess"]
    assert inference.parent.span_id == server.context.span_id  # type: ignore[union-attr]
    assert post.parent.span_id == server.context.span_id  # type: ignore[union-attr]
    assert tokenize.parent.span_id == inference.context.span_id  # type: ignore[union-attr]  # nested phase
    assert inference.attributes is not None and inference.attributes["aiwatch.model"] == "ranker"
    assert len(spans) == 4


async def test_asgi_server_span_with_phase_children_and_exemplars(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    app = fastapi_app(registry, tracer_provider=provider)
    assert (await call(app, "/items/1", headers=[("traceparent", TRACEPARENT)])).status == 200
    check_spans(exporter, "/items/{item_id}")

    openmetrics = await call(app, "/metrics", headers=[("accept", "application/openmetrics-text; version=1.0.0")])
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    text = openmetrics.body.decode()
    assert re.search(r'aiwatch_request_duration_seconds_bucket\{[^}]*route="/items/\{item_id\}"[^}]*\} 1\.0 '
                     rf'# \{{trace_id="{TRACE_ID}"\}}', text)
    assert re.search(rf'aiwatch_phase_duration_seconds_bucket\{{[^}}]*phase="inference"[^}}]*\}} 1\.0 '
                     rf'# \{{trace_id="{TRACE_ID}"\}}', text)
    plain = await call(app, "/metrics")
    assert plain.headers["content-type"].startswith("text/plain")
    assert "trace_id" not in plain.body.decode()  # exemplars only in OpenMetrics


def test_wsgi_server_span_with_phase_children(registry: CollectorRegistry, provider: TracerProvider,
                                              exporter: InMemorySpanExporter) -> None:
    app = Flask("traced")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        with aiwatch.phase("inference", model="ranker"), aiwatch.phase("tokenize"):
            pass
        with aiwatch.phase("postprocess"):
            pass
        return {"id": item_id}

    aiwatch.instrument(app, registry=registry, service="svc", tracer_provider=provider)
    resp = app.test_client().get("/items/1", headers={"traceparent": TRACEPARENT}, buffered=True)
    assert resp.status_code == 200
    check_spans(exporter, "/items/<int:item_id>")


async def test_unsampled_trace_gets_no_exemplar(registry: CollectorRegistry, provider: TracerProvider) -> None:
    app = fastapi_app(registry, tracer_provider=provider)
    await call(app, "/items/1", headers=[("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-00")])
    text = (await call(app, "/metrics", headers=[("accept", "application/openmetrics-text")])).body.decode()
    assert "trace_id" not in text


class _SpyProvider(trace.NoOpTracerProvider):
    """Stands in for "no SDK installed": a no-op global provider that notes any request for a tracer."""

    calls = 0

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        type(self).calls += 1
        return super().get_tracer(*args, **kwargs)


async def test_without_a_provider_no_span_work_is_done(registry: CollectorRegistry,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: _SpyProvider())
    started: list[Any] = []
    monkeypatch.setattr(trace.NoOpTracer, "start_span", lambda *a, **k: started.append(a))
    seen: list[RequestTimeline] = []
    app = fastapi_app(registry, on_request_end=lambda scope, tl, status: seen.append(tl))
    for _ in range(3):
        assert (await call(app, "/items/1", headers=[("traceparent", TRACEPARENT)])).status == 200
    assert _SpyProvider.calls == 0 and started == []
    assert [tl.span for tl in seen] == [None, None, None] and [tl.trace_id for tl in seen] == [None] * 3


async def test_aiwatch_tracing_off_env_disables_an_explicit_provider(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWATCH_TRACING", "off")
    app = fastapi_app(registry, tracer_provider=provider)
    assert (await call(app, "/items/1")).status == 200
    assert exporter.get_finished_spans() == ()


async def test_a_global_sdk_provider_is_used_without_an_argument(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)  # as opentelemetry-instrument would set it

    async def item(request: Any) -> PlainTextResponse:
        with aiwatch.phase("inference", model="ranker"), aiwatch.phase("tokenize"):
            pass
        with aiwatch.phase("postprocess"):
            pass
        return PlainTextResponse("ok")

    app = aiwatch.instrument(Starlette(routes=[Route("/items/{item_id}", item)]), registry=registry, service="svc")
    assert (await call(app, "/items/1", headers=[("traceparent", TRACEPARENT)])).status == 200
    check_spans(exporter, "/items/{item_id}")


async def test_fastapis_own_server_span_is_used_under_a_global_provider(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI (0.136+) traces requests itself when a global SDK provider is installed: aiwatch adds its phase spans
    to FastAPI's SERVER span instead of opening a second one, each under the span current where it starts (FastAPI's
    "fastapi.endpoint" operation span, where FastAPI makes one)."""
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    in_endpoint: list[int] = []
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        in_endpoint.append(trace.get_current_span().get_span_context().span_id)
        with aiwatch.phase("inference", model="ranker"), aiwatch.phase("tokenize"):
            pass
        return {"id": item_id}

    aiwatch.instrument(app, registry=registry, service="svc")
    assert (await call(app, "/items/1", headers=[("traceparent", TRACEPARENT)])).status == 200
    finished = [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == TRACE_ID]
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    assert len(servers) == 1 and servers[0].instrumentation_scope is not None
    assert servers[0].instrumentation_scope.name != "aiwatch"
    assert servers[0].name == "GET /items/{item_id}"
    phases = {s.name: s for s in finished if s.instrumentation_scope and s.instrumentation_scope.name == "aiwatch"}
    assert set(phases) == {"inference", "tokenize"}
    assert phases["inference"].parent.span_id == in_endpoint[0]  # type: ignore[union-attr]
    assert phases["tokenize"].parent.span_id == phases["inference"].context.span_id  # type: ignore[union-attr]
    # the endpoint's span is FastAPI's SERVER span or under it
    assert servers[0].context.span_id in (in_endpoint[0], *_ancestor_ids(in_endpoint[0], finished))


async def test_a_phase_started_inside_an_app_span_is_its_child(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """A phase the app opens inside a span of its own (in the request's trace) is that span's child, as any span
    started there would be; a phase outside it stays the SERVER span's child, and a span of another trace current
    at a phase's start (a new root the app made) is not taken as its parent."""
    tracer = provider.get_tracer("app")

    async def item(request: Any) -> PlainTextResponse:
        with tracer.start_as_current_span("handler"), aiwatch.phase("inference"):
            pass
        with aiwatch.phase("postprocess"):
            pass
        with tracer.start_as_current_span("elsewhere", context=trace.set_span_in_context(trace.INVALID_SPAN)), \
                aiwatch.phase("audit"):
            pass
        return PlainTextResponse("ok")

    app = aiwatch.instrument(Starlette(routes=[Route("/items/{item_id}", item)]), registry=registry,
                             tracer_provider=provider)
    assert (await call(app, "/items/1", headers=[("traceparent", TRACEPARENT)])).status == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server, handler = spans["GET /items/{item_id}"], spans["handler"]
    assert handler.parent.span_id == server.context.span_id  # type: ignore[union-attr]
    assert spans["inference"].parent.span_id == handler.context.span_id  # type: ignore[union-attr]
    assert spans["postprocess"].parent.span_id == server.context.span_id  # type: ignore[union-attr]
    assert spans["elsewhere"].context.trace_id != server.context.trace_id
    assert spans["audit"].parent.span_id == server.context.span_id  # type: ignore[union-attr]
    assert spans["audit"].context.trace_id == server.context.trace_id


def _fastapi_app_tracing_itself(telemetry: dict[str, Any]) -> FastAPI:
    pytest.importorskip("fastapi.telemetry", reason="FastAPI traces requests itself from 0.136")
    app = FastAPI(telemetry=telemetry)  # type: ignore[arg-type,call-arg,unused-ignore]

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        with aiwatch.phase("inference"):
            return {"id": item_id}

    return app


@pytest.mark.parametrize(("headers", "said"), [([], "in two traces"),
                                               ([("traceparent", TRACEPARENT)], "side by side")])
async def test_aiwatch_around_a_fastapi_app_that_traces_itself_says_so_once(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter,
        caplog: pytest.LogCaptureFixture, headers: list[tuple[str, str]], said: str) -> None:
    """AiwatchMiddleware(app) around a FastAPI app whose built-in telemetry traces: FastAPI starts its SERVER span
    from the request's headers alone, not under aiwatch's current span, so a request has two SERVER spans. aiwatch
    cannot merge them from outside: it says so in one warning, with the two ways out, and the requests go on."""
    app = AiwatchMiddleware(_fastapi_app_tracing_itself({"tracer_provider": provider}), registry=registry,
                            tracer_provider=provider)
    with caplog.at_level("WARNING", logger="aiwatch"):
        for _ in range(3):
            assert (await call(app, "/items/1", headers=headers)).status == 200
    warnings = [r.getMessage() for r in caplog.records if "two SERVER spans" in r.getMessage()]
    assert len(warnings) == 1
    assert said in warnings[0] and "aiwatch.instrument(app)" in warnings[0]
    assert "FastAPI(telemetry={'tracing': False})" in warnings[0]
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert sorted(s.instrumentation_scope.name for s in servers) == ["aiwatch"] * 3 + ["fastapi"] * 3  # type: ignore[union-attr]
    assert not registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "tracing"})


async def test_aiwatch_around_a_fastapi_app_with_its_tracing_off_makes_one_trace(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter,
        caplog: pytest.LogCaptureFixture) -> None:
    """The way out the warning names: FastAPI(telemetry={"tracing": False}) behind aiwatch gives one SERVER span,
    aiwatch's, with the phase under it, and no warning. Inside FastAPI (aiwatch.instrument) there is none either."""
    inside = aiwatch.instrument(_fastapi_app_tracing_itself({"tracer_provider": provider}), registry=registry,
                                tracer_provider=provider)
    outside = AiwatchMiddleware(_fastapi_app_tracing_itself({"tracer_provider": provider, "tracing": False}),
                                registry=registry, tracer_provider=provider)
    with caplog.at_level("WARNING", logger="aiwatch"):
        for app in (outside, inside):
            exporter.clear()
            assert (await call(app, "/items/1", headers=[("traceparent", TRACEPARENT)])).status == 200
            finished = exporter.get_finished_spans()
            server, = (s for s in finished if s.kind is SpanKind.SERVER)
            assert server.instrumentation_scope.name == ("aiwatch" if app is outside else "fastapi")  # type: ignore[union-attr]
            assert {s.context.trace_id for s in finished} == {int(TRACE_ID, 16)}
            phase, = (s for s in finished if s.name == "inference")
            assert server.context.span_id in _ancestor_ids(phase.context.span_id, finished)
    assert not [r for r in caplog.records if "two SERVER spans" in r.getMessage()]


async def test_calls_and_app_spans_made_inside_a_phase_are_its_children(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """A phase's span is current while the phase runs: a downstream call's CLIENT span (aiwatch's, or OpenTelemetry's
    requests instrumentation's in front of aiwatch's adapter) and a span the app starts there are its children, and
    the peer is sent the CLIENT span's trace context."""
    tracer = provider.get_tracer("app")
    echoed: dict[str, Any] = {}
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with peer() as base:
            async def item(request: Any) -> PlainTextResponse:
                with aiwatch.phase("fetch"):
                    async with aiwatch.client.instrument_httpx(httpx.AsyncClient(), registry=registry,
                                                               tracer_provider=provider) as client:
                        echoed["httpx"] = (await client.get(f"{base}/ok")).json()
                    with aiwatch.phase("lookup"), tracer.start_as_current_span("db"), \
                            aiwatch.client.instrument_requests(requests.Session(), registry=registry,
                                                              tracer_provider=provider) as session:
                        echoed["requests"] = session.get(f"{base}/ok").json()
                return PlainTextResponse("ok")

            app = aiwatch.instrument(Starlette(routes=[Route("/items/{item_id}", item)]), registry=registry,
                                     tracer_provider=provider)
            assert (await call(app, "/items/1", headers=[("traceparent", TRACEPARENT)])).status == 200
    finally:
        instrumentor.uninstrument()
    finished = exporter.get_finished_spans()
    spans = {s.name: s for s in finished if s.kind is not SpanKind.CLIENT}
    clients = {s.instrumentation_scope.name: s for s in finished  # type: ignore[union-attr]
               if s.kind is SpanKind.CLIENT}
    assert set(clients) == {"aiwatch", "opentelemetry.instrumentation.requests"}
    fetch, lookup, db = spans["fetch"], spans["lookup"], spans["db"]
    assert fetch.parent.span_id == spans["GET /items/{item_id}"].context.span_id  # type: ignore[union-attr]
    assert lookup.parent.span_id == fetch.context.span_id  # type: ignore[union-attr]
    assert clients["aiwatch"].parent.span_id == fetch.context.span_id  # type: ignore[union-attr]
    assert db.parent.span_id == lookup.context.span_id  # type: ignore[union-attr]
    otel_client = clients["opentelemetry.instrumentation.requests"]
    assert otel_client.parent.span_id == db.context.span_id  # type: ignore[union-attr]
    assert echoed["httpx"]["traceparent"] == f"00-{TRACE_ID}-{clients['aiwatch'].context.span_id:016x}-01"
    assert echoed["requests"]["traceparent"] == f"00-{TRACE_ID}-{otel_client.context.span_id:016x}-01"
    assert {s.context.trace_id for s in finished} == {int(TRACE_ID, 16)}


def test_a_streamed_wsgi_body_is_produced_inside_the_server_span(registry: CollectorRegistry,
                                                                 provider: TracerProvider,
                                                                 exporter: InMemorySpanExporter) -> None:
    """A WSGI body is produced after the app returned, as the server iterates it (a streamed response): the request's
    context (its SERVER span, the caller's baggage) is current meanwhile too, as when the app was called, so the
    spans started there are in the request's trace."""
    tracer = provider.get_tracer("app")
    seen: list[object] = []
    app = Flask("streamed")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            with tracer.start_as_current_span("generate"):
                seen.append(baggage.get_baggage("user"))
                yield "a"
            yield "b"

        return Response(chunks())

    aiwatch.instrument(app, registry=registry, tracer_provider=provider)
    resp = app.test_client().get("/stream", headers={"traceparent": TRACEPARENT, "baggage": "user=alice"},
                                 buffered=True)
    assert resp.status_code == 200 and resp.data == b"ab"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server, generate = spans["GET /stream"], spans["generate"]
    assert generate.parent is not None and generate.parent.span_id == server.context.span_id
    assert f"{generate.context.trace_id:032x}" == TRACE_ID
    assert seen == ["alice"]
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left current after the body


def test_a_phase_a_client_that_left_cut_short_is_no_error(registry: CollectorRegistry, provider: TracerProvider,
                                                          exporter: InMemorySpanExporter) -> None:
    """A streamed response whose client hangs up mid-stream (uvicorn): Starlette cancels the body's generator, so
    the phase inside it exits with CancelledError. It was cut short, not failed: its span has no ERROR status and no
    exception event (OpenTelemetry's use_span records only an Exception), where every client that left an LLM
    stream made a red span."""
    async def tokens() -> AsyncIterator[bytes]:
        with aiwatch.phase("generate"):
            for _ in range(10_000):
                yield b"x" * 65536
                await asyncio.sleep(0.01)

    async def stream(request: Any) -> StreamingResponse:
        return StreamingResponse(tokens())

    app = aiwatch.instrument(Starlette(routes=[Route("/stream", stream)]), registry=registry, service="svc",
                             tracer_provider=provider)
    with uvicorn_in_thread(app) as (port, _), httpx.Client() as client:
        with client.stream("GET", f"http://127.0.0.1:{port}/stream") as response:
            assert response.status_code == 200
            next(response.iter_raw())
        wait_until(lambda: any(s.name == "generate" for s in exporter.get_finished_spans()), what="phase span")
    generate = next(s for s in exporter.get_finished_spans() if s.name == "generate")
    assert generate.status.status_code is StatusCode.UNSET
    assert [event.name for event in generate.events] == []


async def _answers_late(request: Any) -> PlainTextResponse:
    await asyncio.sleep(30)
    return PlainTextResponse("late")


async def _streams_then_waits(request: Any) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b"first "
        await asyncio.sleep(30)
        yield b"late"

    return StreamingResponse(body())


@pytest.mark.parametrize(("path", "code"), [("/late", None), ("/stream", 200)])
def test_a_request_the_server_abandons_at_shutdown_is_a_server_error_on_span_and_metric(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter, path: str,
        code: int | None) -> None:
    """uvicorn shuts down with a request running and cancels its task once ``timeout_graceful_shutdown`` ran out.
    The client gets uvicorn's 500 (or, once the response started, a body cut short): the request was cancelled
    before its response was complete, which the HTTP conventions have a server span record as ERROR with
    ``error.type`` (OpenTelemetry's ASGI middleware leaves it UNSET, and its duration without an error: its
    ``use_span`` records only an ``Exception``). The metric agrees: ``500``, a server failure the availability SLO
    counts (not ``499``: the client did not leave)."""
    app = aiwatch.instrument(Starlette(routes=[Route("/late", _answers_late), Route("/stream", _streams_then_waits)]),
                             registry=registry, service="svc", tracer_provider=provider)
    seen: list[Any] = []

    def ask(port: int) -> None:
        with httpx.Client(timeout=30) as client:
            try:
                response = client.get(f"http://127.0.0.1:{port}{path}")
                seen.append((response.status_code, response.content))
            except httpx.HTTPError as exc:
                seen.append(type(exc).__name__)

    with uvicorn_in_thread(app, timeout_graceful_shutdown=0.2) as (port, _):
        asker = threading.Thread(target=ask, args=(port,))
        asker.start()
        wait_until(lambda: registry.get_sample_value("aiwatch_requests_in_flight", {"service": "svc"}) == 1.0,
                   what="the request running")
    asker.join(30)
    assert seen == ([(500, b"Internal Server Error")] if code is None else ["RemoteProtocolError"])
    assert registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "svc", "route": path, "method": "GET", "status": "500", "traffic_class": "realtime"}) == 1.0
    (server,) = (span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER)
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes is not None and server.attributes["error.type"] == "CancelledError"
    assert server.attributes.get("http.response.status_code") == code


def test_a_phase_in_a_wsgi_body_the_server_closed_early_is_no_error(registry: CollectorRegistry,
                                                                    provider: TracerProvider,
                                                                    exporter: InMemorySpanExporter) -> None:
    """The server closes a streamed WSGI body its client stopped reading: the phase inside the generator exits with
    GeneratorExit, which is no error on its span."""
    app = Flask("closed")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            with aiwatch.phase("generate"):
                for _ in range(100):
                    yield "x"

        return Response(chunks())

    aiwatch.instrument(app, registry=registry, tracer_provider=provider)
    resp = app.test_client().get("/stream", buffered=False)
    assert next(iter(resp.response)) == b"x"
    resp.close()
    generate = next(s for s in exporter.get_finished_spans() if s.name == "generate")
    assert generate.status.status_code is StatusCode.UNSET
    assert [event.name for event in generate.events] == []
    assert next(s for s in exporter.get_finished_spans() if s.name == "GET /stream").status.status_code \
        is StatusCode.UNSET


def test_prometheus_stores_exemplars_that_lead_to_the_server_span(registry: CollectorRegistry, provider: TracerProvider,
                                                                  exporter: InMemorySpanExporter) -> None:
    """The whole exemplar path an on-call engineer follows: a real Prometheus with exemplar storage scrapes a
    uvicorn-served FastAPI app (negotiating OpenMetrics with its own Accept header), and the exemplars it returns for
    the dashboard's p99 query carry, as ``trace_id``, the finished SERVER span's trace id, which the prediction log
    writes for the request too; an unsampled request, served last so a wrong exemplar would overwrite the right one,
    leaves no exemplar that leads nowhere."""
    from aiwatch.console.queries import PanelQueries
    from tests.feedback.test_prediction_log import ListSink
    from tests.servers import prometheus

    unsampled = "0af7651916cd43dd8448eb211c80319c"
    sink = ListSink()
    log = PredictionLog(sink, registry=registry)
    with uvicorn_in_thread(fastapi_app(registry, log, tracer_provider=provider)) as (port, _):
        assert requests.get(f"http://127.0.0.1:{port}/items/1", timeout=10).status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/items/2", timeout=10,
                            headers={"traceparent": f"00-{unsampled}-{PARENT_ID}-00"}).status_code == 200
        [server] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER
                    and s.instrumentation_scope is not None and s.instrumentation_scope.name == "aiwatch"]
        trace_id = f"{server.context.trace_id:032x}"
        log.close()
        # the logged prediction joins its trace by the same id; the unsampled one keeps its trace's id too
        assert [row["trace_id"] for row in sink.rows] == [trace_id, unsampled]
        with prometheus([f"127.0.0.1:{port}"], flags=["--enable-feature=exemplar-storage"]) as prom:
            def exemplars(query: str) -> dict[str, set[str]]:
                found: dict[str, set[str]] = {}
                for series in prom.api("/api/v1/query_exemplars", query=query, start="0", end="1e10"):
                    key = series["seriesLabels"]["__name__"] + series["seriesLabels"].get("phase", "")
                    found.setdefault(key, set()).update(json_labels["labels"]["trace_id"]
                                                        for json_labels in series["exemplars"])
                return found

            p99 = PanelQueries().latency_quantile(0.99, "1m")
            wait_until(lambda: bool(exemplars(p99)), what="exemplars of the p99 query")
            assert exemplars(p99) == {"aiwatch_request_duration_seconds_bucket": {trace_id}}
            wait_until(lambda: len(exemplars("aiwatch_phase_duration_seconds_bucket")) == 4,
                       what="exemplars of every phase")
            assert exemplars("aiwatch_phase_duration_seconds_bucket") == {
                f"aiwatch_phase_duration_seconds_bucket{phase}": {trace_id}
                for phase in ("inference", "tokenize", "postprocess", "overhead")}


#: the client-side histograms: their exemplars are the call's trace
CALL_HISTOGRAMS = ("aiwatch_client_request_duration_seconds", "aiwatch_network_duration_seconds")


def test_client_histograms_carry_the_calls_sampled_trace_as_exemplar(
        provider: TracerProvider, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call to a real peer (which reports its time, so the network time is observed too) leaves, in the OpenMetrics
    exposition of its client and network time, the trace id of its CLIENT span: aiwatch's (httpx), OpenTelemetry's
    (its requests instrumentation in front of aiwatch's), or, with aiwatch's tracing off, the span current when the
    call was made. A call in an unsampled trace leaves none: it would lead to no stored trace."""
    def client_spans() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]

    unsampled = trace.NonRecordingSpan(trace.SpanContext(int(TRACE_ID, 16), int(PARENT_ID, 16), is_remote=True,
                                                         trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT)))
    with peer() as base:
        registry = CollectorRegistry()
        with trace.use_span(unsampled), aiwatch.client.instrument_httpx(
                httpx.Client(), registry=registry, tracer_provider=provider) as client:
            assert client.get(f"{base}/ok").json()["traceparent"].split("-")[::3] == ["00", "00"]  # sent unsampled
        assert registry.get_sample_value("aiwatch_network_duration_seconds_count",
                                         {"service": "app", "peer": base.removeprefix("http://"), "phase": ""}) == 1
        assert exemplar_trace_ids(registry) == {}
        assert client_spans() == []

        registry = CollectorRegistry()
        with aiwatch.client.instrument_httpx(httpx.Client(), registry=registry, tracer_provider=provider) as client:
            client.get(f"{base}/ok")
        [ours] = client_spans()
        assert ours.instrumentation_scope is not None and ours.instrumentation_scope.name == "aiwatch"
        assert exemplar_trace_ids(registry) == {key: {f"{ours.context.trace_id:032x}"} for key in CALL_HISTOGRAMS}

        registry = CollectorRegistry()
        instrumentor = RequestsInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            with aiwatch.client.instrument_requests(requests.Session(), registry=registry,
                                                    tracer_provider=provider) as session:
                session.get(f"{base}/ok")
        finally:
            instrumentor.uninstrument()
        [otels] = client_spans()[1:]
        assert otels.instrumentation_scope is not None and otels.instrumentation_scope.name != "aiwatch"
        assert otels.context.trace_id != ours.context.trace_id
        assert exemplar_trace_ids(registry) == {key: {f"{otels.context.trace_id:032x}"} for key in CALL_HISTOGRAMS}

        registry = CollectorRegistry()
        monkeypatch.setenv("AIWATCH_TRACING", "off")
        with provider.get_tracer("app").start_as_current_span("handler") as handler, \
                aiwatch.client.instrument_requests(requests.Session(), registry=registry) as session:
            session.get(f"{base}/ok")
        assert len(client_spans()) == 2  # aiwatch made none
        handler_trace = f"{handler.get_span_context().trace_id:032x}"
        assert exemplar_trace_ids(registry) == {key: {handler_trace} for key in CALL_HISTOGRAMS}
