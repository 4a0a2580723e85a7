"""ASGI's HTTP trailers extension (uvicorn 0.55 offers it over HTTP/2): a response that announces trailers ends with
its last ``http.response.trailers`` message, not its last body message, and aiwatch records it then, as
OpenTelemetry's ASGI middleware and FastAPI's telemetry end their spans then."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from aiwatch.middleware.asgi import AiwatchMiddleware
from tests.http.asgi_driver import call

PAUSE = 0.2  # seconds between the body's end and the trailers


def duration(registry: CollectorRegistry, status: str = "200") -> tuple[float | None, float | None]:
    labels = {"service": "svc", "route": "__unmatched__", "method": "GET", "status": status,
              "traffic_class": "realtime"}
    return (registry.get_sample_value("aiwatch_request_duration_seconds_count", labels),
            registry.get_sample_value("aiwatch_request_duration_seconds_sum", labels))


def trailer_app(send_trailers: bool = True) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"scored", "more_body": False})
        await asyncio.sleep(PAUSE)  # e.g. a checksum or a final status computed after the body
        if send_trailers:
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")],
                        "more_trailers": True})
            await send({"type": "http.response.trailers", "headers": [(b"x-status", b"ok")],
                        "more_trailers": False})

    return app


async def test_a_response_with_trailers_is_recorded_when_its_last_trailers_are_sent(
        registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    app = AiwatchMiddleware(trailer_app(), registry=registry, service="svc", tracer_provider=provider)
    response = await call(app, "/score")
    assert (response.status, response.body) == (200, b"scored")
    assert response.trailers == [{"x-checksum": "abc"}, {"x-status": "ok"}]
    count, total = duration(registry)
    assert count == 1 and total is not None and total >= PAUSE  # the time to the trailers is in it
    (server,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.end_time is not None and server.start_time is not None
    assert server.end_time - server.start_time >= PAUSE * 1e9


async def test_a_response_whose_trailers_never_come_is_recorded_when_the_app_returns(
        registry: CollectorRegistry) -> None:
    app = AiwatchMiddleware(trailer_app(send_trailers=False), registry=registry, service="svc")
    assert (await call(app, "/score")).status == 200
    count, total = duration(registry)
    assert count == 1 and total is not None and total >= PAUSE


async def test_a_client_gone_before_the_trailers_is_499(registry: CollectorRegistry) -> None:
    """The body went out, the trailers could not: the response was not delivered whole."""
    app = AiwatchMiddleware(trailer_app(), registry=registry, service="svc")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.trailers":
            raise OSError("client disconnected")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "2", "method": "GET", "scheme": "http",
             "path": "/score", "raw_path": b"/score", "query_string": b"", "root_path": "", "headers": [],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    with pytest.raises(OSError, match="client disconnected"):  # the server's exception goes on untouched
        await app(scope, receive, send)
    assert duration(registry, "499")[0] == 1
    assert duration(registry, "200")[0] is None


async def test_an_early_hint_passes_through_untouched(registry: CollectorRegistry) -> None:
    """ASGI's early-hints extension (uvicorn's HTTP/2 offers it): a 103 sent before the response goes to the server
    as the app sent it, and the request is recorded once, with the final status."""
    seen: list[dict[str, Any]] = []
    hint = {"type": "http.response.early_hint", "links": ["</style.css>; rel=preload; as=style"]}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(hint)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        seen.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "2", "method": "GET", "scheme": "http",
             "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "", "headers": [],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80),
             "extensions": {"http.response.early_hint": {}}}
    await AiwatchMiddleware(app, registry=registry, service="svc")(scope, receive, send)
    assert seen[0] is hint
    assert [m["type"] for m in seen] == ["http.response.early_hint", "http.response.start", "http.response.body"]
    assert duration(registry)[0] == 1
