"""One recorder factory (aiwatch/recording.py): every integration takes the same recorder options, or a recorder,
and gets its label guard, default service and tracer the same way."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

import aiwatch
from aiwatch.cardinality import guard_for
from aiwatch.metrics import Metrics
from aiwatch.recording import make_client_recorder, make_recorder
from tests.servers import REPO
from tests.sourcecode import parse

Build = Callable[..., Any]


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    pass


def _wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    return []


def _server_integrations() -> list[tuple[str, Build]]:
    """(name, options -> the recorder the integration built) for every server-side integration."""
    from aiwatch.grpc import (
        AiwatchGrpcInstrumentorServer,
        grpc_aio_server_interceptor,
        grpc_server_interceptor,
    )
    from aiwatch.middleware.asgi import AiwatchMiddleware
    from aiwatch.middleware.instrumentor import (
        AiwatchDjangoInstrumentor,
        AiwatchFlaskInstrumentor,
        AiwatchStarletteInstrumentor,
    )
    from aiwatch.middleware.wsgi import AiwatchWSGIMiddleware

    return [
        ("asgi", lambda **o: AiwatchMiddleware(_asgi_app, **o).recorder),
        ("wsgi", lambda **o: AiwatchWSGIMiddleware(_wsgi_app, **o).recorder),
        ("instrument", lambda **o: aiwatch.instrument(_asgi_app, **o).recorder),
        ("grpc_server", lambda **o: grpc_server_interceptor(**o).recorder),
        ("grpc_aio_server", lambda **o: grpc_aio_server_interceptor(**o).recorder),
        ("grpc_server_instrumentor", lambda **o: AiwatchGrpcInstrumentorServer(**o).interceptor.recorder),
        ("starlette_instrumentor", lambda **o: AiwatchStarletteInstrumentor(**o).recorder),
        ("flask_instrumentor", lambda **o: AiwatchFlaskInstrumentor(**o).recorder),
        ("django_instrumentor", lambda **o: AiwatchDjangoInstrumentor(**o).recorder),
    ]


def _client_integrations() -> list[tuple[str, Build]]:
    """(name, options -> the recorder the integration built) for every client-side integration."""
    import httpx
    import requests

    from aiwatch.client import (
        AiwatchAsyncTransport,
        AiwatchHTTPAdapter,
        AiwatchTransport,
        instrument_httpx,
        instrument_requests,
    )
    from aiwatch.grpc import AiwatchGrpcInstrumentorClient, grpc_aio_client_interceptors, grpc_client_interceptor

    return [
        ("httpx", lambda **o: AiwatchTransport(**o).recorder),
        ("httpx_async", lambda **o: AiwatchAsyncTransport(**o).recorder),
        ("instrument_httpx", lambda **o: instrument_httpx(httpx.Client(), **o)._transport.recorder),
        ("requests", lambda **o: AiwatchHTTPAdapter(**o).aiwatch_recorder),
        ("instrument_requests",
         lambda **o: instrument_requests(requests.Session(), **o).adapters["http://"].aiwatch_recorder),
        ("grpc_client", lambda **o: grpc_client_interceptor(**o).recorder),
        ("grpc_aio_client", lambda **o: grpc_aio_client_interceptors(**o)[0].recorder),
        ("grpc_client_instrumentor", lambda **o: AiwatchGrpcInstrumentorClient(**o).recorder),
    ]


SERVERS = _server_integrations()
CLIENTS = _client_integrations()
ALL = [(name, build, "server") for name, build in SERVERS] + [(name, build, "client") for name, build in CLIENTS]
TRACING = {"asgi", "wsgi", "instrument", "grpc_server", "grpc_aio_server", "grpc_server_instrumentor",
           "starlette_instrumentor", "httpx", "httpx_async", "instrument_httpx", "requests", "instrument_requests",
           "grpc_client", "grpc_aio_client", "grpc_client_instrumentor"}
IDS = [name for name, _, _ in ALL]


@pytest.mark.parametrize(("name", "build", "side"), ALL, ids=IDS)
def test_every_integration_takes_the_recorder_options(name: str, build: Build, side: str, metrics: Metrics) -> None:
    recorder = build(service="svc", metrics=metrics, max_label_values=3)
    assert recorder.service == "svc"
    assert recorder.metrics is metrics
    assert recorder.guard.max_values == 3
    registry = CollectorRegistry()
    assert build(registry=registry).metrics.registry is registry


@pytest.mark.parametrize(("name", "build", "side"), ALL, ids=IDS)
def test_every_integration_records_into_a_given_recorder(name: str, build: Build, side: str,
                                                         metrics: Metrics) -> None:
    given = make_recorder(metrics=metrics) if side == "server" else make_client_recorder(metrics=metrics)
    assert build(recorder=given) is given
    with pytest.raises(TypeError, match="either recorder= or the recorder options"):
        build(recorder=given, service="other")


@pytest.mark.parametrize(("name", "build", "side"), ALL, ids=IDS)
def test_every_integration_takes_the_default_service_from_the_environment(
        name: str, build: Build, side: str, metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIWATCH_SERVICE", raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-otel")
    assert build(metrics=metrics).service == "from-otel"
    monkeypatch.setenv("AIWATCH_SERVICE", "from-aiwatch")
    monkeypatch.setenv("AIWATCH_MAX_LABEL_VALUES", "7")
    recorder = build(metrics=Metrics(CollectorRegistry()))  # a fresh registry: its guard's bound is not set yet
    assert (recorder.service, recorder.guard.max_values) == ("from-aiwatch", 7)


@pytest.mark.parametrize(("name", "build", "side"), [i for i in ALL if i[0] in TRACING],
                         ids=[n for n in IDS if n in TRACING])
def test_tracing_integrations_take_a_tracer_provider(name: str, build: Build, side: str, metrics: Metrics,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIWATCH_TRACING", raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert build(metrics=metrics, tracer_provider=TracerProvider()).tracing.tracer() is not None


def test_integrations_given_one_recorder_share_its_label_guard(metrics: Metrics) -> None:
    from aiwatch.grpc import grpc_server_interceptor
    from aiwatch.middleware.asgi import AiwatchMiddleware

    shared = make_recorder(metrics=metrics, max_label_values=1)
    http, grpc = AiwatchMiddleware(_asgi_app, recorder=shared), grpc_server_interceptor(recorder=shared)
    assert http.recorder.guard.fold("route", "/a") == "/a"
    assert grpc.recorder.guard.fold("route", "/pkg.S/M") == "__overflow__"
    assert metrics.registry.get_sample_value("aiwatch_label_overflow_total", {"label": "route"}) == 1


@pytest.mark.parametrize(("name", "build", "side"), ALL, ids=IDS)
def test_every_integration_on_a_registry_shares_its_one_label_guard(name: str, build: Build, side: str,
                                                                    metrics: Metrics) -> None:
    first, second = build(metrics=metrics), build(metrics=metrics)
    assert first is not second
    assert first.guard is second.guard is guard_for(metrics)
    assert build(metrics=Metrics(CollectorRegistry())).guard is not first.guard


def test_the_largest_max_label_values_on_a_registry_wins_in_any_order() -> None:
    for order in ((3, 50, 10), (50, 10, 3), (10, 3, 50)):
        metrics = Metrics(CollectorRegistry())
        recorders = [make_recorder(metrics=metrics, max_label_values=n) for n in order]
        assert {r.guard.max_values for r in recorders} == {50}


def test_a_bound_raised_later_admits_new_values_and_keeps_the_old_ones(metrics: Metrics) -> None:
    small = make_recorder(metrics=metrics, max_label_values=1)
    assert small.guard.fold("route", "/a") == "/a"
    assert small.guard.fold("route", "/b") == "__overflow__"
    make_client_recorder(metrics=metrics, max_label_values=2)
    assert small.guard.fold("route", "/b") == "/b"
    assert small.guard.fold("route", "/a") == "/a"
    assert small.guard.fold("route", "/c") == "__overflow__"


def _calls_in_aiwatch(name: str) -> set[str]:
    """Modules of aiwatch/ that call ``name(...)`` (as a bare name or an attribute)."""
    found = set()
    for path in sorted((REPO / "aiwatch").rglob("*.py")):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) \
                    else None
                if called == name:
                    found.add(path.relative_to(REPO).as_posix())
    return found


def test_label_guards_are_built_in_one_place() -> None:
    # the scan finds cardinality.py's guard_for, so it works; a guard built anywhere else would escape it
    assert _calls_in_aiwatch("LabelGuard") == {"aiwatch/cardinality.py"}


def test_recorders_are_built_only_by_the_factory() -> None:
    # RequestRecorder() in timing.py is the default recorder for phases outside requests
    assert _calls_in_aiwatch("RequestRecorder") == {"aiwatch/recording.py", "aiwatch/timing.py"}
    assert _calls_in_aiwatch("ClientRecorder") == {"aiwatch/recording.py"}


def test_make_recorder_passes_every_server_option(metrics: Metrics) -> None:
    provider = TracerProvider()
    recorder = make_recorder(service="svc", model="ranker", metrics=metrics, tracer_provider=provider,
                             max_label_values=7, slow_threshold=0.25, model_version="v2")
    assert (recorder.service, recorder.model, recorder.slow_threshold) == ("svc", "ranker", 0.25)
    assert recorder.model_version == "v2"
    assert recorder.metrics is metrics and recorder.guard is guard_for(metrics) and recorder.guard.max_values >= 7
    assert recorder.tracing.tracer() is not None
    assert metrics.registry.get_sample_value("aiwatch_slow_threshold_seconds", {"service": "svc"}) == 0.25
    default = make_recorder(service="other", metrics=metrics)
    assert default.model == "" and default.slow_threshold == 0.3


def test_make_client_recorder_passes_every_client_option(metrics: Metrics) -> None:
    def resolver(method: str, url: str) -> str | None:
        return "/items/{id}"

    recorder = make_client_recorder(service="svc", peer="ranker", metrics=metrics, route_resolver=resolver,
                                    max_label_values=7)
    assert (recorder.service, recorder.peer, recorder.route_resolver) == ("svc", "ranker", resolver)
    assert recorder.metrics is metrics and recorder.guard is guard_for(metrics) and recorder.guard.max_values >= 7
    default = make_client_recorder(service="other", metrics=metrics)
    assert default.peer is None and default.route_resolver is None


def test_a_recorder_given_with_options_names_the_options_that_were_set(metrics: Metrics) -> None:
    from aiwatch.recording import resolve_recorder

    given = make_recorder(metrics=metrics)
    with pytest.raises(TypeError, match=r"\(got model, service\)$"):
        resolve_recorder(given, {"service": "svc", "model": "ranker", "registry": None, "model_version": ""})
