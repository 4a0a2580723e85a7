"""aiwatch's instrumentors are OpenTelemetry BaseInstrumentors, registered as ``opentelemetry_instrumentor`` entry
points, idempotent, and restoring what they replaced."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import django.core.asgi
import django.core.wsgi
import pytest
from django.conf import settings
from django.test import override_settings
from fastapi import FastAPI
from flask import Flask
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import Client

import aiwatch
from aiwatch.grpc import AiwatchGrpcInstrumentorClient, AiwatchGrpcInstrumentorServer
from aiwatch.middleware.asgi import AiwatchMiddleware
from aiwatch.middleware.django import MIDDLEWARE_PATH
from aiwatch.middleware.instrumentor import (
    AiwatchDjangoInstrumentor,
    AiwatchFlaskInstrumentor,
    AiwatchStarletteInstrumentor,
)
from tests.http import django_app
from tests.http.asgi_driver import call
from tests.labels import with_defaults

django_app.configure()


def test_entry_points_name_the_instrumentors() -> None:
    found = {e.name: e.load() for e in entry_points(group="opentelemetry_instrumentor")
             if e.name.startswith("aiwatch")}
    assert found == {"aiwatch_starlette": AiwatchStarletteInstrumentor,
                     "aiwatch_flask": AiwatchFlaskInstrumentor,
                     "aiwatch_django": AiwatchDjangoInstrumentor,
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


@pytest.mark.parametrize("framework", ["starlette", "flask"])
def test_a_failing_instrument_call_leaves_the_app_working(registry: CollectorRegistry,
                                                          monkeypatch: pytest.MonkeyPatch, framework: str) -> None:
    import aiwatch.middleware.instrumentor as module

    def broken(app: object, recorder: object, options: object) -> None:
        raise RuntimeError("aiwatch is broken")

    monkeypatch.setattr(module, "instrument_automatically", broken)
    cls = AiwatchStarletteInstrumentor if framework == "starlette" else AiwatchFlaskInstrumentor
    instrumentor = cls(registry=registry)
    instrumentor.instrument()
    try:
        app = Starlette() if framework == "starlette" else flask_app()
    finally:
        instrumentor.uninstrument()
    if isinstance(app, Flask):
        assert get(app, "/items/2").get_json() == {"id": 2}
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


def own_middleware_app(registry: CollectorRegistry, how: str) -> FastAPI:
    """A FastAPI app whose code adds aiwatch's middleware itself (``how``: ``add_middleware``, as
    aiwatch.middleware.asgi shows; ``constructor``: ``FastAPI(middleware=[...])``)."""
    own = Middleware(AiwatchMiddleware, registry=registry, service="own")
    app = FastAPI(middleware=[own]) if how == "constructor" else FastAPI()
    if how == "add_middleware":
        app.add_middleware(AiwatchMiddleware, registry=registry, service="own")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def timed(registry: CollectorRegistry) -> list[tuple[str, float]]:
    name = "aiwatch_request_duration_seconds_count"
    return [(s.labels["service"], s.value) for f in registry.collect() if f.name == "aiwatch_request_duration_seconds"
            for s in f.samples if s.name == name]


@pytest.mark.parametrize("how", ["add_middleware", "constructor"])
async def test_an_app_that_adds_aiwatchs_middleware_itself_is_timed_once_under_the_instrumentor(
        registry: CollectorRegistry, how: str) -> None:
    # opentelemetry-instrument had added a middleware at FastAPI(): each request was timed and counted twice (under
    # service "auto" and "own"), with two Server-Timing entries
    automatic = CollectorRegistry()
    instrumentor = AiwatchStarletteInstrumentor(registry=automatic, service="auto")
    instrumentor.instrument()
    try:
        app = own_middleware_app(registry, how)
    finally:
        instrumentor.uninstrument()
    response = await call(app, "/items/1")
    assert response.headers.get("server-timing", "").count("total;") == 1
    assert (timed(registry), timed(automatic)) == ([("own", 1.0)], [])
    assert [m.cls.__name__ for m in app.user_middleware] == ["AiwatchMiddleware"]


async def test_an_instrument_call_on_an_app_that_added_aiwatchs_middleware_itself_adds_none(
        registry: CollectorRegistry) -> None:
    other = CollectorRegistry()
    app = own_middleware_app(registry, "add_middleware")
    assert aiwatch.instrument(app, registry=other, service="second") is app
    await call(app, "/items/1")
    assert (timed(registry), timed(other)) == ([("own", 1.0)], [])


def get(app: Any, path: str) -> Any:
    """A GET of ``path`` from the WSGI ``app`` through werkzeug's test client, its body read and closed (as a server
    closes it: aiwatch records the request then)."""
    return Client(app).get(path, buffered=True)


def requests_of(registry: CollectorRegistry, route: str, service: str, status: str = "200") -> float | None:
    name = "aiwatch_request_duration_seconds_count"
    return registry.get_sample_value(name, with_defaults(name, {"service": service, "route": route, "method": "GET",
                                                                 "status": status}))


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        with aiwatch.phase("inference"):
            return {"id": item_id}

    return app


def test_flask_instrumentor_instruments_apps_made_meanwhile(registry: CollectorRegistry) -> None:
    original = Flask.__init__
    before = flask_app()
    instrumentor = AiwatchFlaskInstrumentor(registry=registry, service="auto")
    instrumentor.instrument()
    try:
        assert Flask.__init__ is not original
        during = flask_app()
    finally:
        instrumentor.uninstrument()
    assert Flask.__init__ is original  # restored
    after = flask_app()
    for app in (before, during, after):
        response = get(app, "/items/3")
        assert response.status_code == 200 and response.get_json() == {"id": 3}
    assert requests_of(registry, "/items/<int:item_id>", "auto") == 1  # only `during`'s
    assert "inference;dur=" in get(during, "/items/4").headers["Server-Timing"]  # its phases are timed
    assert "Server-Timing" not in get(after, "/items/4").headers
    assert b"aiwatch_request_duration_seconds" in get(during, "/metrics").data


@pytest.mark.parametrize("wrapped", [False, True], ids=["as-made", "after-proxyfix"])
def test_an_explicit_instrument_call_replaces_the_flask_instrumentors_middleware(registry: CollectorRegistry,
                                                                                 wrapped: bool) -> None:
    """The app's own ``aiwatch.instrument(app, ...)`` under ``opentelemetry-instrument``: its options hold, even
    after the app wrapped ``wsgi_app`` again (``ProxyFix``), and the route hook is not added twice."""
    automatic = CollectorRegistry()
    instrumentor = AiwatchFlaskInstrumentor(registry=automatic, service="auto")
    instrumentor.instrument()
    try:
        app = flask_app()
    finally:
        instrumentor.uninstrument()
    if wrapped:
        app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]
    assert aiwatch.instrument(app, registry=registry, service="explicit", exclude_paths=["/healthz"]) is app
    assert aiwatch.instrument(app, registry=automatic, service="third") is app  # explicit twice: a no-op
    assert get(app, "/items/1").status_code == 200
    assert get(app, "/healthz").status_code == 404
    assert requests_of(registry, "/items/<int:item_id>", "explicit") == 1
    assert requests_of(registry, "__unmatched__", "explicit", "404") is None  # /healthz excluded
    assert [s for f in automatic.collect() if f.name == "aiwatch_request_duration_seconds" for s in f.samples] == []
    assert len(app.url_value_preprocessors[None]) == 1  # one route hook
    assert isinstance(app.wsgi_app, ProxyFix) is wrapped


def _django_get(app: Any, path: str) -> int:
    """The status of a GET of ``path`` from Django's WSGI handler (behind aiwatch or not)."""
    return int(get(app, path).status_code)


def test_django_instrumentor_adds_the_route_middleware_and_wraps_handlers_made_meanwhile(
        registry: CollectorRegistry) -> None:
    originals = (django.core.wsgi.get_wsgi_application, django.core.asgi.get_asgi_application)
    with override_settings(MIDDLEWARE=[django_app.CSRF]):
        before = django.core.wsgi.get_wsgi_application()
        instrumentor = AiwatchDjangoInstrumentor(registry=registry, service="auto")
        instrumentor.instrument()
        try:
            during = django.core.wsgi.get_wsgi_application()
            assert settings.MIDDLEWARE == [MIDDLEWARE_PATH, django_app.CSRF]  # put first, as OpenTelemetry's is
            asgi = django.core.asgi.get_asgi_application()
            assert isinstance(asgi, aiwatch.AiwatchMiddleware)
            again = django.core.wsgi.get_wsgi_application()
            assert settings.MIDDLEWARE == [MIDDLEWARE_PATH, django_app.CSRF]  # not twice
        finally:
            instrumentor.uninstrument()
        assert (django.core.wsgi.get_wsgi_application, django.core.asgi.get_asgi_application) == originals
        after = django.core.wsgi.get_wsgi_application()
    assert isinstance(during, aiwatch.AiwatchWSGIMiddleware) and isinstance(again, aiwatch.AiwatchWSGIMiddleware)
    for app in (before, during, after):
        assert _django_get(app, "/api/v1/predict/7/") == 200
    assert requests_of(registry, "api/v1/predict/<int:model_id>/", "auto") == 1  # only `during`'s
    assert _django_get(during, "/nowhere/") == 404
    assert requests_of(registry, "__unmatched__", "auto", "404") == 1


def test_django_instrumentor_keeps_a_route_middleware_already_listed(registry: CollectorRegistry) -> None:
    listed = ["tests.http.django_app.OwnRouteMiddleware", django_app.CSRF]  # a subclass of aiwatch's
    with override_settings(MIDDLEWARE=list(listed)):
        instrumentor = AiwatchDjangoInstrumentor(registry=registry, service="auto")
        instrumentor.instrument()
        try:
            app = django.core.wsgi.get_wsgi_application()
            assert list(settings.MIDDLEWARE) == listed
        finally:
            instrumentor.uninstrument()
    assert _django_get(app, "/api/v1/predict/7/") == 200
    assert requests_of(registry, "api/v1/predict/<int:model_id>/", "auto") == 1


def test_an_explicit_instrument_call_replaces_the_django_instrumentors_middleware(
        registry: CollectorRegistry) -> None:
    """A project's ``wsgi.py`` that calls ``aiwatch.instrument(get_wsgi_application(), ...)`` under
    ``opentelemetry-instrument``: the handler came back instrumented, and the call's options hold."""
    automatic = CollectorRegistry()
    with override_settings(MIDDLEWARE=[django_app.CSRF]):
        instrumentor = AiwatchDjangoInstrumentor(registry=automatic, service="auto")
        instrumentor.instrument()
        try:
            application = aiwatch.instrument(django.core.wsgi.get_wsgi_application(), registry=registry,
                                             service="explicit")
        finally:
            instrumentor.uninstrument()
    assert aiwatch.instrument(application, registry=automatic) is application  # explicit twice: a no-op
    assert isinstance(application, aiwatch.AiwatchWSGIMiddleware)
    assert not isinstance(application.app, aiwatch.AiwatchWSGIMiddleware)  # the handler itself, timed once
    assert _django_get(application, "/api/v1/predict/7/") == 200
    assert requests_of(registry, "api/v1/predict/<int:model_id>/", "explicit") == 1
    assert [s for f in automatic.collect() if f.name == "aiwatch_request_duration_seconds" for s in f.samples] == []


def test_a_failing_django_instrumentation_leaves_the_handler_working(registry: CollectorRegistry,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import aiwatch.middleware.instrumentor as module

    def broken() -> None:
        raise RuntimeError("aiwatch is broken")

    def broken_instrument(app: object, recorder: object, options: object) -> None:
        raise RuntimeError("aiwatch is broken")

    monkeypatch.setattr(module, "_add_route_middleware", broken)
    monkeypatch.setattr(module, "instrument_automatically", broken_instrument)
    with override_settings(MIDDLEWARE=[django_app.CSRF]):
        instrumentor = AiwatchDjangoInstrumentor(registry=registry)
        instrumentor.instrument()
        try:
            app = django.core.wsgi.get_wsgi_application()
        finally:
            instrumentor.uninstrument()
    assert not isinstance(app, aiwatch.AiwatchWSGIMiddleware)
    assert _django_get(app, "/api/v1/predict/7/") == 200
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "instrument"}) == 2
