"""aiwatch's instrumentors are OpenTelemetry BaseInstrumentors, registered as ``opentelemetry_instrumentor`` entry
points, idempotent, and restoring what they replaced."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import aiwatch
from aiwatch.grpc import AiwatchGrpcInstrumentorClient, AiwatchGrpcInstrumentorServer
from aiwatch.middleware.instrumentor import AiwatchStarletteInstrumentor
from tests.http.asgi_driver import call
from tests.labels import with_defaults


def test_entry_points_name_the_instrumentors() -> None:
    found = {e.name: e.load() for e in entry_points(group="opentelemetry_instrumentor")
             if e.name.startswith("aiwatch")}
    assert found == {"aiwatch_starlette": AiwatchStarletteInstrumentor,
                     "aiwatch_grpc_server": AiwatchGrpcInstrumentorServer,
                     "aiwatch_grpc_client": AiwatchGrpcInstrumentorClient}
    for cls in found.values():
        assert issubclass(cls, BaseInstrumentor)
        cls().instrumentation_dependencies()  # what opentelemetry-instrument checks before instrument()


async def test_starlette_instrumentor_instruments_apps_made_meanwhile(registry: CollectorRegistry) -> None:
    original = (Starlette.__init__, FastAPI.__init__)
    before = FastAPI()
    instrumentor = AiwatchStarletteInstrumentor(registry=registry, service="auto")
    instrumentor.instrument()
    instrumentor.instrument()  # idempotent
    try:
        assert (Starlette.__init__, FastAPI.__init__) != original

        async def hello(request: object) -> PlainTextResponse:
            return PlainTextResponse("hi")

        starlette_app = Starlette(routes=[Route("/hello/{name}", hello)])
        fastapi_app = FastAPI()

        @fastapi_app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            with aiwatch.phase("inference"):
                return {"id": item_id}
    finally:
        instrumentor.uninstrument()
        instrumentor.uninstrument()
    assert (Starlette.__init__, FastAPI.__init__) == original  # restored
    after = FastAPI()
    for app, path in ((starlette_app, "/hello/x"), (fastapi_app, "/items/1"), (before, "/x"), (after, "/x")):
        await call(app, path)
    def count(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, with_defaults(name, labels))

    assert count("aiwatch_request_duration_seconds_count", {"service": "auto", "route": "/hello/{name}",
                                                            "method": "GET", "status": "200"}) == 1
    assert count("aiwatch_request_duration_seconds_count", {"service": "auto", "route": "/items/{item_id}",
                                                            "method": "GET", "status": "200"}) == 1
    assert count("aiwatch_phase_duration_seconds_count", {"service": "auto", "model": "",
                                                          "phase": "inference"}) == 1
    # apps made before instrument() or after uninstrument() are left alone
    assert count("aiwatch_request_duration_seconds_count", {"service": "auto", "route": "__unmatched__",
                                                            "method": "GET", "status": "404"}) is None


def test_instrument_options_win_over_the_constructors(registry: CollectorRegistry) -> None:
    other = CollectorRegistry()
    instrumentor = AiwatchStarletteInstrumentor(registry=registry, service="a")
    instrumentor.instrument(registry=other, service="b")
    try:
        assert (instrumentor.recorder.service, instrumentor.recorder.metrics.registry) == ("b", other)
        assert AiwatchStarletteInstrumentor is type(instrumentor) and instrumentor.is_instrumented
    finally:
        instrumentor.uninstrument()
    assert not instrumentor.is_instrumented


def test_a_failing_instrument_call_leaves_the_app_working(registry: CollectorRegistry,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import aiwatch.middleware.instrumentor as module

    def broken(app: object, recorder: object, options: object) -> None:
        raise RuntimeError("aiwatch is broken")

    monkeypatch.setattr(module, "instrument_automatically", broken)
    instrumentor = AiwatchStarletteInstrumentor(registry=registry)
    instrumentor.instrument()
    try:
        app = Starlette()
    finally:
        instrumentor.uninstrument()
    assert isinstance(app, Starlette)
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "instrument"}) == 1


async def test_an_explicit_instrument_call_replaces_the_instrumentors_middleware(registry: CollectorRegistry) -> None:
    # opentelemetry-instrument loads the aiwatch_starlette entry point, so an app whose code calls
    # aiwatch.instrument(app, ...) was already instrumented at FastAPI(): the explicit call was a no-op and its
    # options (service, registry, exclude_paths...) were silently lost
    automatic = CollectorRegistry()
    instrumentor = AiwatchStarletteInstrumentor(registry=automatic, service="auto")
    instrumentor.instrument()
    try:
        app = FastAPI()

        @app.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"id": item_id}

        assert aiwatch.instrument(app, registry=registry, service="explicit", exclude_paths=["/healthz"]) is app
        assert aiwatch.instrument(app, registry=automatic, service="third") is app  # explicit twice: a no-op
    finally:
        instrumentor.uninstrument()
    await call(app, "/items/1")
    await call(app, "/healthz")
    name = "aiwatch_request_duration_seconds_count"
    assert registry.get_sample_value(name, with_defaults(name, {
        "service": "explicit", "route": "/items/{item_id}", "method": "GET", "status": "200"})) == 1
    assert [s for f in registry.collect() if f.name == "aiwatch_request_duration_seconds" for s in f.samples
            if s.name == name and s.labels["route"] != "/items/{item_id}"] == []  # /healthz excluded
    assert [s for f in automatic.collect() if f.name == "aiwatch_request_duration_seconds"
            for s in f.samples if s.name == name] == []
    assert [m.cls.__name__ for m in app.user_middleware] == ["AiwatchMiddleware"]
