"""Django behind aiwatch, on real servers: its WSGI handler under werkzeug's threaded server and its ASGI handler
under uvicorn. Django matches the URL inside its handler, so without aiwatch's route middleware every request was
``__unmatched__``; with it, each request carries the URL pattern it matched."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.test import override_settings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

import aiwatch
import aiwatch.client
import aiwatch.middleware.django as aiwatch_django
from aiwatch.middleware._common import UNMATCHED_ROUTE
from aiwatch.middleware.django import MIDDLEWARE_PATH, AiwatchDjangoRouteMiddleware
from aiwatch.traffic import HEADER
from tests.http import django_app
from tests.http.peer import peer
from tests.servers import uvicorn_in_thread, wait_until

django_app.configure()

PREDICT = "api/v1/predict/<int:model_id>/"
PREDICT_ASYNC = "api/v1/predict-async/<int:model_id>/"
ITEM = r"^items/(?P<pk>[0-9]+)/$"


@contextmanager
def serving(kind: str, middleware: list[str] | None = None, **options: Any) -> Iterator[httpx.Client]:
    """Django's ``kind`` (``wsgi`` or ``asgi``) handler, built with ``middleware`` as its ``MIDDLEWARE`` and
    instrumented with ``options``, on a real server; yields a client of it."""
    with override_settings(MIDDLEWARE=middleware or [MIDDLEWARE_PATH, django_app.CSRF]):
        if kind == "wsgi":
            app = aiwatch.instrument(get_wsgi_application(), **options)
        else:
            app = aiwatch.instrument(get_asgi_application(), **options)
    if kind == "wsgi":
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
                yield client
        finally:
            server.shutdown()
            thread.join(10)
    else:
        with uvicorn_in_thread(app) as (port, _), httpx.Client(base_url=f"http://127.0.0.1:{port}",
                                                                timeout=10) as client:
            yield client


def routes(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    """``aiwatch_request_duration_seconds_count`` by (route, method, status)."""
    return {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value for family in registry.collect()
            for s in family.samples if s.name == "aiwatch_request_duration_seconds_count"}


def recorded(registry: CollectorRegistry, count: int) -> Callable[[], bool]:
    return lambda: sum(routes(registry).values()) >= count  # WSGI records at close(), after the body was read


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")  # a sync iterator served under ASGI
@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_each_request_is_labelled_with_the_url_pattern_it_matched(kind: str, registry: CollectorRegistry,
                                                                  provider: TracerProvider,
                                                                  exporter: InMemorySpanExporter) -> None:
    """Included patterns with converters, a ``re_path`` regex, the site root, sync and async views, a view that
    raises, a request CSRF refused after the URL matched, a streamed body, and a 404 (the only unmatched one)."""
    requests = [("GET", "/api/v1/predict/7/"), ("GET", "/api/v1/predict/8/"), ("GET", "/api/v1/predict-async/9/"),
                ("GET", "/"), ("GET", "/items/12/"), ("GET", "/boom/"), ("POST", "/form/"), ("GET", "/stream/"),
                ("GET", "/no/such/page/")]
    with serving(kind, registry=registry, service="svc", tracer_provider=provider) as client:
        statuses = [client.request(method, url).status_code for method, url in requests]
        wait_until(recorded(registry, len(requests)), what="every request recorded")
    assert statuses == [200, 200, 200, 200, 200, 500, 403, 200, 404]
    assert routes(registry) == {
        (PREDICT, "GET", "200"): 2, (PREDICT_ASYNC, "GET", "200"): 1, ("/", "GET", "200"): 1,
        (ITEM, "GET", "200"): 1, ("boom/", "GET", "500"): 1, ("form/", "POST", "403"): 1,
        ("stream/", "GET", "200"): 1, (UNMATCHED_ROUTE, "GET", "404"): 1,
    }
    spans = {span.name: span.attributes for span in exporter.get_finished_spans()}
    assert spans[f"GET {PREDICT}"]["http.route"] == PREDICT  # type: ignore[index]
    assert "GET" in spans  # the 404: no route, so the span is named after the method alone


def test_a_flood_of_paths_no_pattern_matches_adds_one_series(registry: CollectorRegistry) -> None:
    """Paths from traffic never become labels: 300 distinct paths, among them near misses of real patterns (a
    converter that does not match, a missing slash, a longer path), are all ``__unmatched__``."""
    paths = [f"/api/v1/predict/{word}/" for word in ("x", "-1", "7a", "1.5")]
    paths += ["/api/v1/predict/7", "/api/v1/predict/7/extra/", "/items/abc/", "/boom", "/ITEMS/1/"]
    paths += [f"/scan/{n}/{n * 7919}" for n in range(300 - len(paths))]
    with serving("asgi", registry=registry, service="svc") as client:
        assert {client.get(url).status_code for url in paths} == {404}
    assert routes(registry) == {(UNMATCHED_ROUTE, "GET", "404"): 300}


def test_under_asgi_the_route_is_stored_on_the_event_loop(registry: CollectorRegistry,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Django runs a middleware that is not ``async_capable`` in a thread of its own under ASGI (``sync_to_async``):
    a thread hop per request. aiwatch's runs on the event loop, in the thread the async view ran in."""
    store_threads: list[int] = []
    store = aiwatch_django.store_route

    def store_and_note(request: Any) -> None:
        store_threads.append(threading.get_ident())
        store(request)

    monkeypatch.setattr(aiwatch_django, "store_route", store_and_note)
    with serving("asgi", registry=registry, service="svc") as client:
        assert client.get("/api/v1/predict-async/3/").status_code == 200
    # as soon as the URL matched (process_view), and once the chain returned
    assert store_threads == [django_app.view_threads["/api/v1/predict-async/3/"]] * 2
    assert routes(registry) == {(PREDICT_ASYNC, "GET", "200"): 1}


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_a_call_made_in_a_view_a_route_rule_makes_batch_carries_the_class(kind: str,
                                                                          registry: CollectorRegistry) -> None:
    """A route rule names the class of a request from the moment Django matched its URL, so the view's outgoing calls
    forward it. The route was stored only once the chain returned: the request was recorded as batch, but its calls
    carried no class, and the next service counted a batch endpoint's work as real-time demand."""
    batch = aiwatch.TrafficClasses(routes={"forward/": "batch"})
    peer_client = aiwatch.client.instrument_httpx(httpx.Client(), service="svc", registry=registry)
    with peer() as base, peer_client:
        django_app.peer_call.update(client=peer_client, base=base)
        with serving(kind, registry=registry, service="svc", traffic_classes=batch) as client:
            received = client.get("/forward/").json()
            wait_until(recorded(registry, 1), what="the request recorded")
    assert received[HEADER] == "batch"
    assert registry.get_sample_value("aiwatch_request_duration_seconds_count", {
        "service": "svc", "route": "forward/", "method": "GET", "status": "200", "traffic_class": "batch"}) == 1


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_the_language_code_of_an_i18n_pattern_is_no_part_of_the_route(kind: str, registry: CollectorRegistry) -> None:
    """``i18n_patterns`` put the URL's language code at the start of Django's route (``de/translated/<int:n>/``):
    one endpoint was a route value per language of ``settings.LANGUAGES`` (Django's 99), so a scan of the codes
    filled the route label's bound (100) and the app's next routes were ``__overflow__``."""
    from django.conf import global_settings
    from django.utils.translation import check_for_language

    with serving(kind, [MIDDLEWARE_PATH, django_app.LOCALE], registry=registry, service="svc") as client:
        # the languages Django ships translations for: 6.1 lists Haitian Creole (ht) without them, and its
        # LocaleMiddleware then activates no language for /ht/... (a 404, Django's own answer)
        codes = [code for code, _ in global_settings.LANGUAGES if check_for_language(code)]
        assert len(codes) >= 90
        assert {client.get(f"/{code}/translated/1/").status_code for code in codes} == {200}
        assert client.get("/xx/translated/1/").status_code == 404  # no such language: no pattern matched
        assert client.get("/api/v1/predict/2/").status_code == 200
        wait_until(recorded(registry, len(codes) + 2), what="every request recorded")
    assert routes(registry) == {("<language>/translated/<int:n>/", "GET", "200"): len(codes),
                                (UNMATCHED_ROUTE, "GET", "404"): 1, (PREDICT, "GET", "200"): 1}


def classes(registry: CollectorRegistry) -> dict[str, str]:
    """The ``traffic_class`` of each route's requests."""
    return {s.labels["route"]: s.labels["traffic_class"] for family in registry.collect() for s in family.samples
            if s.name == "aiwatch_request_duration_seconds_count"}


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_a_route_rule_written_as_the_url_path_matches_djangos_templates(kind: str,
                                                                        registry: CollectorRegistry) -> None:
    """Django writes its templates without the leading slash (``api/v1/predict/<int:model_id>/``, a ``re_path``'s
    ``^items/...``), and the rules are written as paths (``/v1/bulk/*``, as documented): no rule ever matched a
    Django route, and a batch endpoint's requests all counted as real-time. The site root and a 404 are matched by
    no rule here."""
    rules = aiwatch.TrafficClasses(routes={"/api/v1/predict/*": "batch", "/items/*": "batch", "/form/": "batch"})
    with serving(kind, registry=registry, service="svc", traffic_classes=rules) as client:
        for method, url in [("GET", "/api/v1/predict/7/"), ("GET", "/items/3/"), ("POST", "/form/"), ("GET", "/"),
                            ("GET", "/api/v1/predict-async/2/"), ("GET", "/no/such/page/")]:
            client.request(method, url)
        wait_until(recorded(registry, 6), what="every request recorded")
    assert classes(registry) == {PREDICT: "batch", ITEM: "batch", "form/": "batch", "/": "realtime",
                                 PREDICT_ASYNC: "realtime", UNMATCHED_ROUTE: "realtime"}


def test_the_middleware_takes_the_mode_of_the_chain_it_is_in() -> None:
    sync = AiwatchDjangoRouteMiddleware(lambda request: "response")
    assert not aiwatch_django.iscoroutinefunction(sync)

    async def respond(request: Any) -> str:
        return "response"

    assert aiwatch_django.iscoroutinefunction(AiwatchDjangoRouteMiddleware(respond))


@pytest.mark.parametrize("make_handler", [get_wsgi_application, get_asgi_application])
def test_instrument_refuses_a_django_handler_without_the_route_middleware(
        make_handler: Callable[[], Any], registry: CollectorRegistry) -> None:
    """Without aiwatch's route middleware every request of the app would be ``__unmatched__``: a clear error at
    setup, not labels that silently say nothing."""
    with override_settings(MIDDLEWARE=[django_app.CSRF]):
        handler = make_handler()
        with pytest.raises(ValueError, match=f"MIDDLEWARE setting has no '{MIDDLEWARE_PATH}'"):
            aiwatch.instrument(handler, registry=registry)
        assert aiwatch.instrument(handler, registry=registry, route_resolver=lambda request: None) is not handler
    with override_settings(MIDDLEWARE=["tests.http.django_app.OwnRouteMiddleware", django_app.CSRF]):
        assert aiwatch.instrument(make_handler(), registry=registry) is not None  # a subclass counts


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_a_route_that_cannot_be_read_is_counted_and_the_request_served(kind: str,
                                                                       registry: CollectorRegistry) -> None:
    """A ``resolver_match`` another middleware broke once the view returned: the request is served, keeps the route
    stored when its URL matched, and the failure is counted in the recorder's metrics under ``component="route"``."""
    middleware = [MIDDLEWARE_PATH, "tests.http.django_app.BreakMatchMiddleware"]
    with serving(kind, middleware, registry=registry, service="svc") as client:
        assert client.get("/api/v1/predict/1/").status_code == 200
        wait_until(recorded(registry, 1), what="the request recorded")
    assert routes(registry) == {(PREDICT, "GET", "200"): 1}
    assert registry.get_sample_value("aiwatch_instrumentation_errors_total", {"component": "route"}) == 1


def test_otel_django_excluded_urls_leave_requests_untimed(registry: CollectorRegistry,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_PYTHON_DJANGO_EXCLUDED_URLS``, as OpenTelemetry's Django instrumentation reads it, for a Django
    handler given to ``aiwatch.instrument``."""
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "predict")
    monkeypatch.setenv("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "items/")
    with serving("wsgi", registry=registry, service="svc") as client:
        assert [client.get(url).status_code for url in ("/items/4/", "/api/v1/predict/2/")] == [200, 200]
        wait_until(recorded(registry, 1), what="the request recorded")
    assert routes(registry) == {(PREDICT, "GET", "200"): 1}


OTEL_DJANGO = "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
"""The middleware OpenTelemetry's ``DjangoInstrumentor`` puts first in ``settings.MIDDLEWARE``."""


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_opentelemetrys_django_instrumentation_behind_aiwatch_makes_an_internal_span(
        kind: str, registry: CollectorRegistry, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """OpenTelemetry's ``DjangoInstrumentor`` puts its middleware inside the handler aiwatch wraps: aiwatch's SERVER
    span is the request's, OpenTelemetry's an INTERNAL span under it in the same trace, and both name the URL pattern
    (docs/http.md, "With OpenTelemetry's own instrumentation")."""
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    instrumentor = DjangoInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with serving(kind, [OTEL_DJANGO, MIDDLEWARE_PATH, django_app.CSRF], registry=registry, service="svc",
                     tracer_provider=provider) as client:
            assert client.get("/api/v1/predict/7/").status_code == 200
            wait_until(recorded(registry, 1), what="the request recorded")
    finally:
        instrumentor.uninstrument()
    assert routes(registry) == {(PREDICT, "GET", "200"): 1}
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (internal,) = [s for s in spans if s.kind is SpanKind.INTERNAL]
    assert server.instrumentation_scope is not None and server.instrumentation_scope.name == "aiwatch"
    assert internal.instrumentation_scope is not None
    assert internal.instrumentation_scope.name == "opentelemetry.instrumentation.django"
    assert internal.parent is not None and internal.parent.span_id == server.context.span_id
    assert internal.context.trace_id == server.context.trace_id
    assert server.name == internal.name == f"GET {PREDICT}"
    assert server.attributes is not None and internal.attributes is not None
    assert server.attributes["http.route"] == internal.attributes["http.route"] == PREDICT


def test_any_asgi_app_may_store_its_route_in_the_scope(registry: CollectorRegistry) -> None:
    """The key Django's middleware writes is open to any framework: a bare ASGI app that names its route."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["aiwatch.route"] = "/models/{name}"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with uvicorn_in_thread(aiwatch.instrument(app, registry=registry, service="svc")) as (port, _):
        assert httpx.get(f"http://127.0.0.1:{port}/models/a").status_code == 200
    assert routes(registry) == {("/models/{name}", "GET", "200"): 1}
